"""Which chat threads belong to which conversation, and what was already posted."""

from __future__ import annotations

import json
from collections.abc import Sequence

from bot.model import ChatRef, Network
from storage.connection import RedisBacked, text

# KEYS: posts, threads, message index. ARGV: post field, ref, target key, message id, cid.
# One step: the post is recorded, the thread root set if the conversation has none
# there yet, and the email's Message-ID mapped to the conversation.
_RECORD = """
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('HSETNX', KEYS[2], ARGV[3], ARGV[2])
if ARGV[4] ~= '' then redis.call('HSETNX', KEYS[3], ARGV[4], ARGV[5]) end
return 1
"""


def _dump(ref: ChatRef) -> str:
    return json.dumps([ref.network.value, ref.room, ref.message, ref.thread])


def _load(data: str) -> ChatRef:
    network, room, message, thread = json.loads(data)
    return ChatRef(Network(network), room, message, thread)


class RedisConversations(RedisBacked):
    async def conversation_of(self, message_ids: Sequence[str]) -> str | None:
        """The conversation of the first of ``message_ids`` that is known."""
        if not message_ids:
            return None
        async with self._translated("looking up a conversation by Message-ID"):
            found = await self.redis.hmget(self.keys.message_index(), list(message_ids))
        return next((text(f) for f in found if f is not None), None)

    async def remember_message(self, message_id: str, conversation_id: str) -> None:
        async with self._translated("indexing a Message-ID"):
            await self.redis.hsetnx(self.keys.message_index(), message_id, conversation_id)

    async def threads(self, conversation_id: str) -> dict[str, ChatRef]:
        """Target key -> thread root, for every place the conversation was posted."""
        async with self._translated(f"reading the threads of {conversation_id}"):
            found = await self.redis.hgetall(self.keys.conversation_threads(conversation_id))
        return {text(k): _load(text(v)) for k, v in found.items()}

    async def posted(self, message_key: str, target_key: str) -> ChatRef | None:
        async with self._translated("checking whether a message was posted"):
            found = await self.redis.hget(self.keys.posts(), f"{message_key}|{target_key}")
        return _load(text(found)) if found is not None else None

    async def record_post(self, message_key: str, target_key: str, ref: ChatRef,
                          conversation_id: str, message_id: str = "") -> None:
        async with self._translated("recording a chat post"):
            await self.redis.eval(
                _RECORD, 3, self.keys.posts(), self.keys.conversation_threads(conversation_id),
                self.keys.message_index(), f"{message_key}|{target_key}", _dump(ref),
                target_key, message_id, conversation_id)
