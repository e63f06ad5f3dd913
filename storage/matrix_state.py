"""The Matrix bot's own state: its login session and its direct-message rooms."""

from __future__ import annotations

import json
import secrets
from typing import cast

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

    async def keys_device(self, user_id: str) -> str | None:
        async with self._translated("reading the Matrix key store's device"):
            found = await self.redis.hget(self.keys.matrix_session(user_id), "keys_device")
        return text(found) if found is not None else None

    async def save_keys_device(self, user_id: str, device_id: str | None) -> None:
        async with self._translated("recording the Matrix key store's device"):
            if device_id is None:
                await self.redis.hdel(self.keys.matrix_session(user_id), "keys_device")
            else:
                await self.redis.hset(self.keys.matrix_session(user_id), "keys_device",
                                      device_id)

    async def hand_over(self, request: dict[str, object], wait: float
                        ) -> dict[str, object] | None:
        request_id = secrets.token_hex(12)
        answer_key = self.keys.matrix_outbox_answer(request_id)
        async with self._translated("handing a Matrix post over"):
            await self.redis.rpush(self.keys.matrix_outbox(),
                                   json.dumps({**request, "id": request_id}))
            found = await self.redis.blpop([answer_key], timeout=wait)
        if found is None:
            return None
        return cast(dict[str, object], json.loads(text(found[1])))

    async def take_handed(self, wait: float) -> dict[str, object] | None:
        async with self._translated("taking a handed Matrix post"):
            found = await self.redis.blpop([self.keys.matrix_outbox()], timeout=wait)
        return cast(dict[str, object], json.loads(text(found[1]))) if found else None

    async def answer_handed(self, request_id: str, answer: dict[str, object]) -> None:
        key = self.keys.matrix_outbox_answer(request_id)
        async with self._translated("answering a handed Matrix post"), \
                self.redis.pipeline(transaction=True) as pipe:
            pipe.rpush(key, json.dumps(answer))
            pipe.expire(key, 300)
            await pipe.execute()

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
