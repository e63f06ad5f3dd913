"""The audit trail on Redis: a capped stream, one entry per event.

People are never written into it by address: each address in an event (its actor, its
target, its detail) is replaced by a pseudonym, ``person:TOKEN``, kept in two hashes
beside the stream. Reading the trail puts the addresses back; erasing a person drops
their pseudonym, and every entry that named them then says "an erased person"."""

from __future__ import annotations

import re
import secrets

from bot.audit import AuditAction, AuditEvent
from bot.model import Address, AddressError
from storage.connection import RedisBacked, text

AUDIT_KEPT = 100_000
ERASED = "(an erased person)"
# What names a person in audit text: an email address, a Slack TEAM/USER or a Matrix id,
# with or without the canonical network prefix.
_PERSON = re.compile(
    r"(?:(?:email|slack|matrix):)?(?:@[a-z0-9._=\-/+]+:[a-z0-9.\-]+(?::[0-9]{1,5})?"
    r"|(?-i:[TE][A-Z0-9]{2,}/[UW][A-Z0-9]{2,})"
    r"|[^\s<>,;:\"'()\[\]@]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)+)", re.IGNORECASE)
_PSEUDONYM = re.compile(r"person:([a-z0-9]{16})")
# KEYS: people, pseudonyms. ARGV: address, candidate token, ... The person's token, made
# once (the first candidate offered wins).
_TOKENS = """
local out = {}
for i = 1, #ARGV, 2 do
  redis.call('HSETNX', KEYS[1], ARGV[i], ARGV[i + 1])
  local token = redis.call('HGET', KEYS[1], ARGV[i])
  redis.call('HSETNX', KEYS[2], token, ARGV[i])
  out[#out + 1] = token
end
return out
"""


def _canonical(found: str) -> str | None:
    try:
        return str(Address.parse(found))
    except AddressError:
        return None


class RedisAudit(RedisBacked):
    async def record(self, event: AuditEvent) -> None:
        fields = {"at": repr(event.at), "action": event.action.value, "actor": event.actor,
                  "target": event.target, "detail": event.detail}
        people = {m.group(0): c for v in fields.values() for m in _PERSON.finditer(v)
                  if (c := _canonical(m.group(0))) is not None}
        async with self._translated("recording an audit event"):
            if people:
                canon = sorted(set(people.values()))
                args = [a for c in canon for a in (c, secrets.token_hex(8))]
                tokens = await self.redis.eval(_TOKENS, 2, self.keys.audit_people(),
                                               self.keys.audit_pseudonyms(), *args)
                named = dict(zip(canon, (text(t) for t in tokens), strict=True))

                def hide(match: re.Match[str]) -> str:
                    canonical = people.get(match.group(0))
                    return f"person:{named[canonical]}" if canonical else match.group(0)

                fields = {k: _PERSON.sub(hide, v) if k != "at" else v
                          for k, v in fields.items()}
            await self.redis.xadd(self.keys.audit(), fields,  # type: ignore[arg-type]
                                  maxlen=AUDIT_KEPT, approximate=True)

    async def recent(self, limit: int = 100) -> list[AuditEvent]:
        async with self._translated("reading the audit trail"):
            found = await self.redis.xrevrange(self.keys.audit(), count=limit)
            raws = [{text(k): text(v) for k, v in (raw or {}).items()} for _, raw in found or []]
            tokens = sorted({t for f in raws for v in f.values()
                             for t in _PSEUDONYM.findall(v)})
            known = dict(zip(tokens, await self.redis.hmget(self.keys.audit_pseudonyms(),
                                                             tokens), strict=True)) \
                if tokens else {}

        def shown(value: str) -> str:
            return _PSEUDONYM.sub(lambda m: _bare(known.get(m.group(1))), value)

        return [AuditEvent(AuditAction(f["action"]), shown(f["actor"]), shown(f["target"]),
                           shown(f["detail"]), float(f["at"])) for f in raws]


def _bare(canonical: object) -> str:
    """An address as the trail always showed it: emails bare, chat ids canonical."""
    if canonical is None:
        return ERASED
    value = text(canonical)
    return value.partition(":")[2] if value.startswith("email:") else value
