"""The Matrix bot's own state: its login session and its direct-message rooms."""

from __future__ import annotations

from storage.connection import RedisBacked, text


class RedisMatrixState(RedisBacked):
    async def session(self, user_id: str) -> tuple[str, str] | None:
        """(device id, access token) saved by an earlier login, if any."""
        async with self._translated("reading the Matrix session"):
            found = await self.redis.hmget(self.keys.matrix_session(user_id),
                                           ["device_id", "access_token"])
        if found[0] is None or found[1] is None:
            return None
        return text(found[0]), text(found[1])

    async def save_session(self, user_id: str, device_id: str, access_token: str) -> None:
        async with self._translated("saving the Matrix session"):
            await self.redis.hset(self.keys.matrix_session(user_id),
                                  mapping={"device_id": device_id, "access_token": access_token})

    async def forget_session(self, user_id: str) -> None:
        async with self._translated("forgetting the Matrix session"):
            await self.redis.delete(self.keys.matrix_session(user_id))

    async def sync_token(self, user_id: str) -> str | None:
        async with self._translated("reading the Matrix sync token"):
            found = await self.redis.get(self.keys.matrix_sync(user_id))
        return text(found) if found is not None else None

    async def save_sync_token(self, user_id: str, token: str) -> None:
        async with self._translated("saving the Matrix sync token"):
            await self.redis.set(self.keys.matrix_sync(user_id), token)

    async def dm_room(self, user_id: str) -> str | None:
        async with self._translated("reading a Matrix DM room"):
            found = await self.redis.hget(self.keys.matrix_dm_rooms(), user_id)
        return text(found) if found is not None else None

    async def claim_dm_room(self, user_id: str, room_id: str) -> str:
        """Record ``room_id`` as the DM room unless another was recorded first; the winner."""
        async with self._translated("recording a Matrix DM room"):
            await self.redis.hsetnx(self.keys.matrix_dm_rooms(), user_id, room_id)
            found = await self.redis.hget(self.keys.matrix_dm_rooms(), user_id)
        return text(found)
