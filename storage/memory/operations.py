"""In memory: what running Switchboard keeps for itself: mailbox checkpoints and leases,
refused mail, rate-limit counters, the Matrix session, the audit trail."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections import deque

from bot.audit import AuditEvent
from bot.model import Refusal
from bot.stores import Checkpoint
from storage.audit import AUDIT_KEPT
from storage.ingest import FAILURES_REMEMBERED, REFUSALS_KEPT, SET_ASIDE_KEPT, SET_ASIDE_MAX_BYTES
from storage.memory.clock import Expiring


class MemoryIngest:
    def __init__(self) -> None:
        self.checkpoints: dict[tuple[str, str], Checkpoint] = {}
        self.refused: deque[Refusal] = deque(maxlen=REFUSALS_KEPT)
        self.failures: Expiring[int] = Expiring()
        self.aside: Expiring[bytes] = Expiring()
        self.leases: Expiring[str] = Expiring()

    async def checkpoint(self, account: str, mailbox: str) -> Checkpoint | None:
        return self.checkpoints.get((account, mailbox))

    async def save_checkpoint(self, account: str, mailbox: str, cp: Checkpoint) -> None:
        self.checkpoints[(account, mailbox)] = cp

    async def refuse(self, refusal: Refusal) -> None:
        self.refused.append(refusal)

    async def count_failure(self, key: str) -> int:
        count = (self.failures.get(key) or 0) + 1
        self.failures.set(key, count, FAILURES_REMEMBERED)
        return count

    async def set_aside(self, key: str, raw: bytes, refusal: Refusal) -> None:
        self.aside.set(key, raw[:SET_ASIDE_MAX_BYTES], SET_ASIDE_KEPT)
        self.failures.delete(key)
        self.refused.append(refusal)

    async def set_aside_message(self, key: str) -> bytes | None:
        return self.aside.get(key)

    async def refusals(self, limit: int = 100) -> list[Refusal]:
        return list(self.refused)[-limit:]

    async def take_lease(self, name: str, holder: str, ttl: float) -> bool:
        current = self.leases.get(name)
        if current is not None and current != holder:
            return False
        self.leases.set(name, holder, ttl)
        return True

    async def release_lease(self, name: str, holder: str) -> None:
        if self.leases.get(name) == holder:
            self.leases.delete(name)


class MemoryRateLimits:
    def __init__(self) -> None:
        self.windows: Expiring[set[str]] = Expiring()  # the events counted in a window

    async def hit(self, name: str, limit: int, window: int, event: str = "") -> bool:
        bucket = f"{name}:{int(time.time()) // window}"
        events = self.windows.get(bucket)
        if events is None:
            events = set()
            self.windows.set(bucket, events, window)
        # A plain hit always counts; a named event counts once.
        events.add(event or f"\0{len(events)}")
        return len(events) <= limit


class MemoryMatrixState:
    def __init__(self) -> None:
        self.sessions: dict[str, tuple[str, str]] = {}
        self.dm_rooms: dict[str, str] = {}
        self.sync_tokens: dict[str, str] = {}
        self.key_devices: dict[str, str] = {}
        self.outbox: asyncio.Queue[dict[str, object]] = asyncio.Queue()
        self.answers: dict[str, asyncio.Future[dict[str, object]]] = {}

    async def session(self, user_id: str) -> tuple[str, str] | None:
        return self.sessions.get(user_id)

    async def save_session(self, user_id: str, device_id: str, access_token: str) -> None:
        self.sessions[user_id] = (device_id, access_token)

    async def forget_session(self, user_id: str) -> None:
        self.sessions.pop(user_id, None)

    async def dm_room(self, user_id: str) -> str | None:
        return self.dm_rooms.get(user_id)

    async def keys_device(self, user_id: str) -> str | None:
        return self.key_devices.get(user_id)

    async def save_keys_device(self, user_id: str, device_id: str | None) -> None:
        if device_id is None:
            self.key_devices.pop(user_id, None)
        else:
            self.key_devices[user_id] = device_id

    async def hand_over(self, request: dict[str, object], wait: float
                        ) -> dict[str, object] | None:
        request_id = secrets.token_hex(12)
        waiting: asyncio.Future[dict[str, object]] = asyncio.get_running_loop().create_future()
        self.answers[request_id] = waiting
        await self.outbox.put({**request, "id": request_id})
        try:
            return await asyncio.wait_for(waiting, wait)
        except TimeoutError:
            return None
        finally:
            self.answers.pop(request_id, None)

    async def take_handed(self, wait: float) -> dict[str, object] | None:
        try:
            return await asyncio.wait_for(self.outbox.get(), wait)
        except TimeoutError:
            return None

    async def answer_handed(self, request_id: str, answer: dict[str, object]) -> None:
        waiting = self.answers.get(request_id)
        if waiting is not None and not waiting.done():
            waiting.set_result(answer)

    async def sync_token(self, user_id: str) -> str | None:
        return self.sync_tokens.get(user_id)

    async def save_sync_token(self, user_id: str, token: str) -> None:
        self.sync_tokens[user_id] = token

    async def claim_dm_room(self, user_id: str, room_id: str) -> str:
        return self.dm_rooms.setdefault(user_id, room_id)


class MemoryAudit:
    def __init__(self) -> None:
        self.events: deque[AuditEvent] = deque(maxlen=AUDIT_KEPT)

    async def record(self, event: AuditEvent) -> None:
        self.events.append(event)

    async def recent(self, limit: int = 100) -> list[AuditEvent]:
        return list(reversed(self.events))[:limit]


class MemoryWorkspaces:
    def __init__(self) -> None:
        self.installations: dict[str, dict[str, object]] = {}
        self.states: Expiring[bool] = Expiring()
        self.seen: Expiring[bool] = Expiring()

    async def save(self, team: str, installation: dict[str, object]) -> None:
        self.installations[team] = dict(installation)

    async def find(self, team: str) -> dict[str, object] | None:
        found = self.installations.get(team)
        return dict(found) if found is not None else None

    async def remove(self, team: str) -> bool:
        return self.installations.pop(team, None) is not None

    async def teams(self) -> list[str]:
        return sorted(self.installations)

    async def issue_state(self, ttl: int) -> str:
        state = secrets.token_urlsafe(24)
        self.states.set(state, True, ttl)
        return state

    async def consume_state(self, state: str) -> bool:
        found = self.states.get(state) is not None
        self.states.delete(state)
        return found

    async def first_time(self, key: str, ttl: int) -> bool:
        return self.seen.set_new(key, True, ttl)
