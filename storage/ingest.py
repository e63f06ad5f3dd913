"""Ingest bookkeeping: IMAP checkpoints, refused mail, and mailbox leases."""

from __future__ import annotations

import json

from bot.model import Refusal
from bot.stores import Checkpoint
from storage.connection import RedisBacked, text

# KEYS: lease. ARGV: holder, ttl ms. Take or extend only a lease we hold or nobody does.
LEASE = """
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""
RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
REFUSALS_KEPT = 1000
FAILURES_REMEMBERED = 86400  # seconds a message's failure count is kept
SET_ASIDE_KEPT = 30 * 86400  # seconds a set-aside message's bytes are kept
SET_ASIDE_MAX_BYTES = 5_000_000


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

    async def count_failure(self, key: str) -> int:
        """One more failed attempt at the message ``key``; how many there were."""
        async with (self._translated("counting a failed email"),
                    self.redis.pipeline(transaction=True) as pipe):
            pipe.incr(self.keys.ingest_failures(key))
            pipe.expire(self.keys.ingest_failures(key), FAILURES_REMEMBERED)
            count, _ = await pipe.execute()
        return int(count)

    async def set_aside(self, key: str, raw: bytes, refusal: Refusal) -> None:
        """Keep a message that cannot be bridged (its bytes, for a while) and list it
        with the reason among the refused, so ingest can move past it."""
        async with (self._translated("setting an email aside"),
                    self.redis.pipeline(transaction=True) as pipe):
            pipe.set(self.keys.set_aside(key), raw[:SET_ASIDE_MAX_BYTES].decode("latin-1"),
                     ex=SET_ASIDE_KEPT)
            pipe.delete(self.keys.ingest_failures(key))
            pipe.rpush(self.keys.ingest_refusals(), json.dumps(refusal.__dict__))
            pipe.ltrim(self.keys.ingest_refusals(), -REFUSALS_KEPT, -1)
            await pipe.execute()
        await self._durable("setting an email aside")

    async def set_aside_message(self, key: str) -> bytes | None:
        async with self._translated("reading a set-aside email"):
            found = await self.redis.get(self.keys.set_aside(key))
        return text(found).encode("latin-1") if found is not None else None

    async def refusals(self, limit: int = 100) -> list[Refusal]:
        async with self._translated("reading refused emails"):
            found = await self.redis.lrange(self.keys.ingest_refusals(), -limit, -1)
        return [Refusal(**json.loads(text(f))) for f in found]

    async def take_lease(self, name: str, holder: str, ttl: float) -> bool:
        async with self._translated(f"taking the lease on {name}"):
            return bool(await self.redis.eval(LEASE, 1, self.keys.lease(name), holder,
                                              int(ttl * 1000)))

    async def release_lease(self, name: str, holder: str) -> None:
        async with self._translated(f"releasing the lease on {name}"):
            await self.redis.eval(RELEASE, 1, self.keys.lease(name), holder)


