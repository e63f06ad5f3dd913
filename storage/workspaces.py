"""Slack workspaces that installed the app: installations, OAuth states, handled deliveries."""

from __future__ import annotations

import json
import secrets
from typing import cast

from storage.connection import RedisBacked, text


class RedisWorkspaces(RedisBacked):
    async def save(self, team: str, installation: dict[str, object]) -> None:
        async with self._translated("saving a Slack installation"):
            await self.redis.hset(self.keys.slack_installations(), team,
                                  json.dumps(installation, sort_keys=True))

    async def find(self, team: str) -> dict[str, object] | None:
        async with self._translated("reading a Slack installation"):
            found = await self.redis.hget(self.keys.slack_installations(), team)
        return cast(dict[str, object], json.loads(text(found))) if found is not None else None

    async def remove(self, team: str) -> bool:
        async with self._translated("removing a Slack installation"):
            return bool(await self.redis.hdel(self.keys.slack_installations(), team))

    async def teams(self) -> list[str]:
        async with self._translated("listing Slack installations"):
            return sorted(text(t) for t in await self.redis.hkeys(self.keys.slack_installations()))

    async def issue_state(self, ttl: int) -> str:
        state = secrets.token_urlsafe(24)
        async with self._translated("keeping an OAuth state"):
            await self.redis.set(self.keys.slack_oauth_state(state), "1", ex=ttl)
        return state

    async def consume_state(self, state: str) -> bool:
        if not state or len(state) > 200:
            return False
        async with self._translated("checking an OAuth state"):
            return bool(await self.redis.delete(self.keys.slack_oauth_state(state)))

    async def first_time(self, key: str, ttl: int) -> bool:
        async with self._translated("noting a Slack delivery"):
            return bool(await self.redis.set(self.keys.slack_seen(key), "1", nx=True, ex=ttl))
