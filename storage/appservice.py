"""The Matrix application service's state: transactions handled, and email senders'
ghosts (keyed by the sender's address, so `forget` sweeps them with the person)."""

from __future__ import annotations

from storage.connection import RedisBacked, text

TRANSACTION_KEPT = 7 * 86400  # seconds: the homeserver repeats a transaction until answered


class RedisAppService(RedisBacked):
    async def transaction_handled(self, txn: str) -> bool:
        async with self._translated("reading a Matrix transaction"):
            return bool(await self.redis.exists(self.keys.appservice_transaction(txn)))

    async def record_transaction(self, txn: str) -> None:
        async with self._translated("recording a Matrix transaction"):
            await self.redis.set(self.keys.appservice_transaction(txn), 1, ex=TRANSACTION_KEPT)

    async def ghost(self, email: str) -> tuple[str, str] | None:
        async with self._translated("reading an email sender's Matrix user"):
            found = await self.redis.hmget(self.keys.ghost(email), ["user", "name"])
        if found[0] is None:
            return None
        return text(found[0]), text(found[1] or "")

    async def save_ghost(self, email: str, user_id: str, name: str) -> None:
        async with self._translated("recording an email sender's Matrix user"):
            await self.redis.hset(self.keys.ghost(email), mapping={"user": user_id, "name": name})

    async def ghost_in(self, email: str, room: str) -> bool:
        async with self._translated("reading an email sender's Matrix rooms"):
            return bool(await self.redis.sismember(self.keys.ghost_rooms(email), room))

    async def ghost_joined(self, email: str, room: str, joined: bool) -> None:
        async with self._translated("recording an email sender's Matrix rooms"):
            if joined:
                await self.redis.sadd(self.keys.ghost_rooms(email), room)
            else:
                await self.redis.srem(self.keys.ghost_rooms(email), room)
