"""The audit trail on Redis: a capped stream, one entry per event."""

from __future__ import annotations

from bot.audit import AuditAction, AuditEvent
from storage.connection import RedisBacked, text

AUDIT_KEPT = 100_000


class RedisAudit(RedisBacked):
    async def record(self, event: AuditEvent) -> None:
        fields = {"at": repr(event.at), "action": event.action.value, "actor": event.actor,
                  "target": event.target, "detail": event.detail}
        async with self._translated("recording an audit event"):
            await self.redis.xadd(self.keys.audit(), fields,  # type: ignore[arg-type]
                                  maxlen=AUDIT_KEPT, approximate=True)

    async def recent(self, limit: int = 100) -> list[AuditEvent]:
        async with self._translated("reading the audit trail"):
            found = await self.redis.xrevrange(self.keys.audit(), count=limit)
        events = []
        for _, raw in found or []:
            f = {text(k): text(v) for k, v in (raw or {}).items()}
            events.append(AuditEvent(AuditAction(f["action"]), f["actor"], f["target"],
                                     f["detail"], float(f["at"])))
        return events
