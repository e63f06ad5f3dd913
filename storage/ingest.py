"""Ingest bookkeeping: IMAP checkpoints, refused mail, and mailbox leases."""

from __future__ import annotations

import json
from dataclasses import dataclass

from bot.model import Refusal
from storage.connection import RedisBacked, text

# KEYS: lease. ARGV: holder, ttl ms. Take or extend only a lease we hold or nobody does.
_LEASE = """
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
REFUSALS_KEPT = 1000


@dataclass(frozen=True)
class Checkpoint:
    uidvalidity: int
    last_uid: int


class RedisIngest(RedisBacked):
    async def checkpoint(self, account: str, mailbox: str) -> Checkpoint | None:
        async with self._translated(f"reading the checkpoint of {mailbox}"):
            found = await self.redis.hgetall(self.keys.imap_checkpoint(account, mailbox))
        if not found:
            return None
        values = {text(k): int(text(v)) for k, v in found.items()}
        return Checkpoint(values["uidvalidity"], values["last_uid"])

    async def save_checkpoint(self, account: str, mailbox: str, cp: Checkpoint) -> None:
        async with self._translated(f"saving the checkpoint of {mailbox}"):
            await self.redis.hset(self.keys.imap_checkpoint(account, mailbox),
                                  mapping={"uidvalidity": cp.uidvalidity,
                                           "last_uid": cp.last_uid})

    async def refuse(self, refusal: Refusal) -> None:
        async with (self._translated("recording a refused email"),
                    self.redis.pipeline(transaction=True) as pipe):
            pipe.rpush(self.keys.ingest_refusals(), json.dumps(refusal.__dict__))
            pipe.ltrim(self.keys.ingest_refusals(), -REFUSALS_KEPT, -1)
            await pipe.execute()

    async def refusals(self, limit: int = 100) -> list[Refusal]:
        async with self._translated("reading refused emails"):
            found = await self.redis.lrange(self.keys.ingest_refusals(), -limit, -1)
        return [Refusal(**json.loads(text(f))) for f in found]

    async def take_lease(self, name: str, holder: str, ttl: float) -> bool:
        async with self._translated(f"taking the lease on {name}"):
            return bool(await self.redis.eval(_LEASE, 1, self.keys.lease(name), holder,
                                              int(ttl * 1000)))

    async def release_lease(self, name: str, holder: str) -> None:
        async with self._translated(f"releasing the lease on {name}"):
            await self.redis.eval(_RELEASE, 1, self.keys.lease(name), holder)


