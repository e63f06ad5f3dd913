"""Held mail: each email's record, bytes and decision in one hash that expires, and the
indexes of what still waits (all of it, and by room)."""

from __future__ import annotations

import json
from dataclasses import asdict, replace

from bot.held import HELD_DAYS, Decision, HeldMail
from bot.model import Network
from storage.connection import RedisBacked, text

WAITING_KEPT = 1000  # the newest held emails indexed as waiting; older ones only expire

# KEYS: held record, waiting, waiting in its room. ARGV: id, record, bytes, at, ttl s,
# how many waiting are indexed. Held once: a re-read email finds its record.
_HOLD = """
if redis.call('HSETNX', KEYS[1], 'r', ARGV[2]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'raw', ARGV[3])
redis.call('EXPIRE', KEYS[1], ARGV[5])
for i = 2, 3 do
  redis.call('ZADD', KEYS[i], ARGV[4], ARGV[1])
  redis.call('ZREMRANGEBYSCORE', KEYS[i], 0, tonumber(ARGV[4]) - tonumber(ARGV[5]))
  redis.call('ZREMRANGEBYRANK', KEYS[i], 0, -tonumber(ARGV[6]) - 1)
  redis.call('EXPIRE', KEYS[i], ARGV[5])
end
return 1
"""

# KEYS: held record, waiting, waiting in its room. ARGV: decision JSON.
# The decision is made once: a second one returns the first.
_DECIDE = """
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
local earlier = redis.call('HGET', KEYS[1], 'd')
if earlier then return {earlier, 0} end
redis.call('HSET', KEYS[1], 'd', ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[2])
redis.call('ZREM', KEYS[3], ARGV[2])
return {ARGV[1], 1}
"""


class RedisHeld(RedisBacked):
    async def hold(self, held: HeldMail, raw: bytes) -> bool:
        async with self._translated("holding an email for the admins"):
            made = bool(await self.redis.eval(
                _HOLD, 3, self.keys.held(held.id), self.keys.held_waiting(),
                self.keys.held_in_room(held.network, held.room), held.id,
                json.dumps(asdict(held)), raw.decode("latin-1"), held.at, HELD_DAYS * 86400,
                WAITING_KEPT))
        # Accepted from its sender, it is in the store alone: kept through a failover.
        await self._durable("holding an email for the admins")
        return made

    async def get(self, held_id: str) -> HeldMail | None:
        async with self._translated("reading a held email"):
            record, decision = await self.redis.hmget(self.keys.held(held_id), ["r", "d"])
        return _load(record, decision)

    async def raw(self, held_id: str) -> bytes | None:
        async with self._translated("reading a held email"):
            found = await self.redis.hget(self.keys.held(held_id), "raw")
        return text(found).encode("latin-1") if found is not None else None

    async def decide(self, held_id: str, decision: Decision, by: str, at: float
                     ) -> tuple[HeldMail, bool] | None:
        held = await self.get(held_id)
        if held is None:
            return None
        made = json.dumps({"decision": decision.value, "by": by, "at": at})
        async with self._translated("recording a decision on a held email"):
            answer = await self.redis.eval(
                _DECIDE, 3, self.keys.held(held_id), self.keys.held_waiting(),
                self.keys.held_in_room(held.network, held.room), made, held_id)
        if not answer:
            return None
        return _decided(held, text(answer[0])), bool(int(answer[1]))

    async def undo(self, held_id: str) -> None:
        held = await self.get(held_id)
        if held is None:
            return
        async with (self._translated("taking back a decision on a held email"),
                    self.redis.pipeline(transaction=True) as pipe):
            pipe.hdel(self.keys.held(held_id), "d")
            pipe.zadd(self.keys.held_waiting(), {held_id: held.at})
            pipe.zadd(self.keys.held_in_room(held.network, held.room), {held_id: held.at})
            await pipe.execute()

    async def waiting(self, network: Network | None = None, room: str = "",
                      limit: int = 20) -> list[HeldMail]:
        index = self.keys.held_in_room(network.value, room) if network is not None \
            else self.keys.held_waiting()
        async with self._translated("listing held emails"):
            ids = await self.redis.zrevrange(index, 0, limit - 1)
            async with self.redis.pipeline(transaction=False) as pipe:
                for held_id in ids:
                    pipe.hmget(self.keys.held(text(held_id)), ["r", "d"])
                found = await pipe.execute()
        held = [_load(r, d) for r, d in found]
        return [h for h in held if h is not None and not h.decision]


def _load(record: object, decision: object) -> HeldMail | None:
    if record is None:
        return None
    held = HeldMail(**json.loads(text(record)))
    return _decided(held, text(decision)) if decision is not None else held


def _decided(held: HeldMail, decision: str) -> HeldMail:
    made = json.loads(decision)
    return replace(held, decision=made["decision"], decided_by=made["by"],
                   decided_at=float(made["at"]))
