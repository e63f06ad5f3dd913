"""Which chat threads belong to which conversation, and what was already posted."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence

from bot.model import ChatRef, Network
from storage.connection import RedisBacked, text

# KEYS: posts, threads, message index, chat messages, posting, room latest. ARGV: post
# field, ref, target key, message id, cid, chat message field, cid/eid, network:room. One
# step: the post is recorded (and no longer begun), the thread root set if the
# conversation has none there yet, the email's Message-ID mapped to the conversation, the
# chat message mapped back to what it shows, and the room's latest post noted.
RECORD_POST = """
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('HDEL', KEYS[5], ARGV[1])
redis.call('HSETNX', KEYS[2], ARGV[3], ARGV[2])
if ARGV[4] ~= '' then redis.call('HSETNX', KEYS[3], ARGV[4], ARGV[5]) end
redis.call('HSET', KEYS[4], ARGV[6], ARGV[7])
redis.call('HSET', KEYS[6], ARGV[8], ARGV[7])
return 1
"""


# KEYS: posts, posting. ARGV: post field, now. Where it was posted, if it was; else mark
# the post begun, and say whether an earlier attempt had begun it and not recorded it.
# A Lua function, so the arrival script (storage/arrivals.py) begins posts by the same rule.
BEGIN_FUNCTION = """
local function begin(posts, posting, field, now)
  local ref = redis.call('HGET', posts, field)
  if ref then return ref, 0 end
  local earlier = redis.call('HGET', posting, field)
  redis.call('HSET', posting, field, now)
  if earlier then return '', 1 end
  return '', 0
end
"""
_BEGIN = BEGIN_FUNCTION + """
local ref, earlier = begin(KEYS[1], KEYS[2], ARGV[1], ARGV[2])
return {ref, earlier}
"""


def chat_key(network: Network, room: str, message: str) -> str:
    return f"{network.value}:{room}:{message}"


def dump_ref(ref: ChatRef) -> str:
    return json.dumps([ref.network.value, ref.room, ref.message, ref.thread])


def load_ref(data: str) -> ChatRef:
    network, room, message, thread = json.loads(data)
    return ChatRef(Network(network), room, message, thread)


class RedisConversations(RedisBacked):
    async def conversations_of(self, message_ids: Sequence[str]) -> list[str | None]:
        """The conversation of each Message-ID (None where unknown), in one round trip."""
        if not message_ids:
            return []
        async with self._translated("looking up conversations by Message-ID"):
            found = await self.redis.hmget(self.keys.message_index(), list(message_ids))
        return [text(f) if f is not None else None for f in found]

    async def remember_message(self, message_id: str, conversation_id: str) -> None:
        async with self._translated("indexing a Message-ID"):
            await self.redis.hsetnx(self.keys.message_index(), message_id, conversation_id)

    async def threads(self, conversation_id: str) -> dict[str, ChatRef]:
        """Target key -> thread root, for every place the conversation was posted."""
        async with self._translated(f"reading the threads of {conversation_id}"):
            found = await self.redis.hgetall(self.keys.conversation_threads(conversation_id))
        return {text(k): load_ref(text(v)) for k, v in found.items()}

    async def posted(self, message_key: str, target_key: str) -> ChatRef | None:
        async with self._translated("checking whether a message was posted"):
            found = await self.redis.hget(self.keys.posts(), f"{message_key}|{target_key}")
        return load_ref(text(found)) if found is not None else None

    async def begin_post(self, message_key: str, target_key: str
                         ) -> tuple[ChatRef | None, bool]:
        """(where it was posted, None if not yet; whether an earlier attempt began
        posting it and never recorded the outcome), marking this attempt begun."""
        async with self._translated("beginning a chat post"):
            ref, interrupted = await self.redis.eval(
                _BEGIN, 2, self.keys.posts(), self.keys.posting(),
                f"{message_key}|{target_key}", repr(time.time()))
        return (load_ref(text(ref)) if ref else None), bool(int(interrupted))

    async def record_post(self, message_key: str, target_key: str, ref: ChatRef,
                          conversation_id: str, message_id: str = "",
                          entry_id: str = "") -> None:
        async with self._translated("recording a chat post"):
            await self.redis.eval(
                RECORD_POST, 6, self.keys.posts(), self.keys.conversation_threads(conversation_id),
                self.keys.message_index(), self.keys.chat_messages(), self.keys.posting(),
                self.keys.room_latest(),
                f"{message_key}|{target_key}", dump_ref(ref), target_key, message_id,
                conversation_id, chat_key(ref.network, ref.room, ref.message),
                f"{conversation_id}/{entry_id}", f"{ref.network.value}:{ref.room}")

    async def latest_in(self, network: Network, room: str) -> tuple[str, str] | None:
        """(conversation, entry) of the latest post Switchboard made in ``room``."""
        async with self._translated("looking up the latest post in a room"):
            found = await self.redis.hget(self.keys.room_latest(), f"{network.value}:{room}")
        if found is None:
            return None
        cid, _, eid = text(found).partition("/")
        return cid, eid

    async def shown_in(self, network: Network, room: str, message: str
                       ) -> tuple[str, str] | None:
        """(conversation id, entry id) of what a chat message Switchboard posted shows."""
        async with self._translated("looking up a chat message"):
            found = await self.redis.hget(self.keys.chat_messages(),
                                          chat_key(network, room, message))
        if found is None:
            return None
        cid, _, eid = text(found).partition("/")
        return cid, eid
