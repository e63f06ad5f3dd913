"""Conversations and their history on Redis.

An entry is stored once, in its conversation's hash, and indexed by time in the
conversation's timeline and in each participant's own timeline.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Sequence
from typing import Any

from bot.model import Address, HistoryEntry, HistoryPage
from storage.codec import dump_entry, load_entry
from storage.connection import RedisBacked, text
from storage.keys import Keys
from storage.search import RedisSearch

# KEYS: entries hash, timeline, the all-entries index, participant timelines...
# ARGV: entry id, record, score (the entry's time), conversation/entry, arrival time (the
# retention index's score: a sender-written date could keep an entry for ever).
APPEND_ENTRY = """
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 0 then return 0 end
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
redis.call('ZADD', KEYS[3], ARGV[5], ARGV[4])
for i = 4, #KEYS do redis.call('ZADD', KEYS[i], ARGV[3], ARGV[4]) end
return 1
"""


def entry_keys(keys: Keys, entry: HistoryEntry) -> list[str]:
    """The keys APPEND_ENTRY writes for ``entry``: where it is kept and indexed by time
    (its conversation, every entry's index for retention, each participant)."""
    cid = entry.conversation_id
    return [keys.conversation_entries(cid), keys.conversation_timeline(cid),
            keys.history_index(), *(keys.person_history(str(a)) for a in entry.participants)]

_SEP = "/"  # conversation ids and entry ids never contain it (see check_id)


def check_id(kind: str, value: str) -> None:
    if not value or _SEP in value:
        raise ValueError(f"{kind} id {value!r} must be non-empty and contain no {_SEP!r}")


class RedisHistory(RedisBacked):
    def __init__(self, client: Any, keys: Keys, search: RedisSearch | None = None) -> None:
        super().__init__(client, keys)
        self.search = search  # its documents are written with the entries

    async def append(self, entry: HistoryEntry, arrived: float | None = None) -> bool:
        check_id("conversation", entry.conversation_id)
        check_id("entry", entry.id)
        cid = entry.conversation_id
        keys = entry_keys(self.keys, entry)
        mode = await self.search.mode() if self.search is not None else ""
        async with self._translated(f"recording history of conversation {cid}"), \
                self.redis.pipeline(transaction=bool(mode)) as pipe:
            pipe.eval(APPEND_ENTRY, len(keys), *keys, entry.id, dump_entry(entry),
                      repr(entry.at), f"{cid}{_SEP}{entry.id}",
                      repr(time.time() if arrived is None else arrived))
            if self.search is not None:
                self.search.index(pipe, entry, mode)
            added = (await pipe.execute())[0]
        return bool(added)

    async def entry(self, conversation_id: str, entry_id: str) -> HistoryEntry | None:
        async with self._translated(f"reading entry {entry_id}"):
            found = await self.redis.hget(self.keys.conversation_entries(conversation_id),
                                          entry_id)
        return load_entry(text(found)) if found is not None else None

    async def count(self, conversation_id: str) -> int:
        async with self._translated(f"counting history of {conversation_id}"):
            return int(await self.redis.zcard(self.keys.conversation_timeline(conversation_id)))

    async def conversation(self, conversation_id: str, page: int = 0,
                           page_size: int = 20) -> HistoryPage:
        start = page * page_size
        async with self._translated(f"reading history of conversation {conversation_id}"):
            found = await self.redis.zrevrange(
                self.keys.conversation_timeline(conversation_id), start, start + page_size)
            ids = [text(i) for i in found]
            records = await self.redis.hmget(self.keys.conversation_entries(conversation_id),
                                             ids[:page_size]) if ids else []
        entries = tuple(load_entry(text(r)) for r in records if r is not None)
        return HistoryPage(entries, page, page_size, has_more=len(ids) > page_size)

    async def conversations_of(self, addresses: Sequence[Address], limit: int
                               ) -> set[str]:
        async with (self._translated("reading a person's conversations"),
                    self.redis.pipeline(transaction=False) as pipe):
            for address in dict.fromkeys(addresses):
                pipe.zrevrange(self.keys.person_history(str(address)), 0, limit - 1)
            timelines: list[list[str]] = await pipe.execute()
        return {text(m).partition(_SEP)[0] for members in timelines for m in members}

    async def person(self, addresses: Sequence[Address], page: int = 0,
                     page_size: int = 20) -> HistoryPage:
        """Merges each address's timeline; reads only as deep as the page asked for."""
        depth = (page + 1) * page_size + 1
        async with self._translated("reading a person's history"):
            async with self.redis.pipeline(transaction=False) as pipe:
                for address in dict.fromkeys(addresses):
                    pipe.zrevrange(self.keys.person_history(str(address)), 0, depth - 1,
                                   withscores=True)
                timelines: list[list[tuple[str, float]]] = await pipe.execute()
            merged = heapq.merge(*timelines, key=lambda item: -item[1])
            members = list(dict.fromkeys(member for member, _ in merged))
            window = members[page * page_size:(page + 1) * page_size + 1]
            async with self.redis.pipeline(transaction=False) as pipe:
                for member in window[:page_size]:
                    cid, _, eid = member.partition(_SEP)
                    pipe.hget(self.keys.conversation_entries(cid), eid)
                records: list[str | None] = await pipe.execute()
        entries = tuple(load_entry(r) for r in records if r is not None)
        return HistoryPage(entries, page, page_size, has_more=len(window) > page_size)
