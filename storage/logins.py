"""Mailbox OAuth2 logins shared by every process: sealed tokens, and who fetches next."""

from __future__ import annotations

from storage.connection import RedisBacked, text
from storage.ingest import LEASE, RELEASE


class RedisLogins(RedisBacked):
    async def load(self, name: str) -> dict[str, str]:
        async with self._translated("reading a mailbox's OAuth2 login"):
            found = await self.redis.hgetall(self.keys.oauth_login(name))
        return {text(k): text(v) for k, v in found.items()}

    async def save(self, name: str, fields: dict[str, str]) -> None:
        async with self._translated("keeping a mailbox's OAuth2 login"), \
                self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(self.keys.oauth_login(name))
            pipe.hset(self.keys.oauth_login(name), mapping=dict(fields.items()))
            await pipe.execute()

    async def lock(self, name: str, holder: str, ttl: float) -> bool:
        async with self._translated("taking the OAuth2 login's lock"):
            return bool(await self.redis.eval(LEASE, 1, self.keys.oauth_lock(name), holder,
                                              int(ttl * 1000)))

    async def unlock(self, name: str, holder: str) -> None:
        async with self._translated("releasing the OAuth2 login's lock"):
            await self.redis.eval(RELEASE, 1, self.keys.oauth_lock(name), holder)
