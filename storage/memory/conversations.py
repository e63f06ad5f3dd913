"""In memory: history, and which chat posts belong to which conversation."""

from __future__ import annotations

import heapq
import time
from collections.abc import Sequence

from bot.model import Address, ChatRef, HistoryEntry, HistoryPage, Network
from storage.history import check_id


class _Timeline:
    """A sorted set of (score, member), read newest first as ZREVRANGE reads it."""

    def __init__(self) -> None:
        self.scores: dict[str, float] = {}

    def add(self, member: str, score: float) -> None:
        self.scores[member] = score

    def newest(self, start: int, stop: int) -> list[tuple[str, float]]:
        ordered = sorted(self.scores.items(), key=lambda i: (i[1], i[0]), reverse=True)
        return ordered[start:stop + 1]


class MemoryHistory:
    def __init__(self) -> None:
        self.entries: dict[str, dict[str, HistoryEntry]] = {}
        self.timelines: dict[str, _Timeline] = {}
        self.people: dict[Address, _Timeline] = {}

    async def append(self, entry: HistoryEntry, arrived: float | None = None) -> bool:
        check_id("conversation", entry.conversation_id)
        check_id("entry", entry.id)
        cid = entry.conversation_id
        kept = self.entries.setdefault(cid, {})
        if entry.id in kept:
            return False
        kept[entry.id] = entry
        self.timelines.setdefault(cid, _Timeline()).add(entry.id, entry.at)
        for person in entry.participants:
            self.people.setdefault(person, _Timeline()).add(f"{cid}/{entry.id}", entry.at)
        return True

    async def entry(self, conversation_id: str, entry_id: str) -> HistoryEntry | None:
        return self.entries.get(conversation_id, {}).get(entry_id)

    async def count(self, conversation_id: str) -> int:
        return len(self.entries.get(conversation_id, {}))

    async def conversation(self, conversation_id: str, page: int = 0,
                           page_size: int = 20) -> HistoryPage:
        start = page * page_size
        timeline = self.timelines.get(conversation_id, _Timeline())
        ids = [member for member, _ in timeline.newest(start, start + page_size)]
        kept = self.entries.get(conversation_id, {})
        return HistoryPage(tuple(kept[i] for i in ids[:page_size]), page, page_size,
                           has_more=len(ids) > page_size)

    async def conversations_of(self, addresses: Sequence[Address], limit: int) -> set[str]:
        return {member.partition("/")[0] for a in dict.fromkeys(addresses)
                for member, _ in self.people.get(a, _Timeline()).newest(0, limit - 1)}

    async def person(self, addresses: Sequence[Address], page: int = 0,
                     page_size: int = 20) -> HistoryPage:
        depth = (page + 1) * page_size + 1
        timelines = [self.people.get(a, _Timeline()).newest(0, depth - 1)
                     for a in dict.fromkeys(addresses)]
        merged = heapq.merge(*timelines, key=lambda item: -item[1])
        members = list(dict.fromkeys(member for member, _ in merged))
        window = members[page * page_size:(page + 1) * page_size + 1]
        entries = []
        for member in window[:page_size]:
            cid, _, eid = member.partition("/")
            found = self.entries.get(cid, {}).get(eid)
            if found is not None:
                entries.append(found)
        return HistoryPage(tuple(entries), page, page_size, has_more=len(window) > page_size)


class MemoryConversations:
    def __init__(self) -> None:
        self.message_index: dict[str, str] = {}
        self.thread_roots: dict[str, dict[str, ChatRef]] = {}
        self.posts: dict[str, ChatRef] = {}
        self.posting: dict[str, float] = {}
        self.chat_messages: dict[str, str] = {}
        self.room_latest: dict[str, str] = {}

    async def conversations_of(self, message_ids: Sequence[str]) -> list[str | None]:
        return [self.message_index.get(m) for m in message_ids]

    async def remember_message(self, message_id: str, conversation_id: str) -> None:
        self.message_index.setdefault(message_id, conversation_id)

    async def threads(self, conversation_id: str) -> dict[str, ChatRef]:
        return dict(self.thread_roots.get(conversation_id, {}))

    async def posted(self, message_key: str, target_key: str) -> ChatRef | None:
        return self.posts.get(f"{message_key}|{target_key}")

    async def begin_post(self, message_key: str, target_key: str
                         ) -> tuple[ChatRef | None, bool]:
        field = f"{message_key}|{target_key}"
        if field in self.posts:
            return self.posts[field], False
        earlier = field in self.posting
        self.posting[field] = time.time()
        return None, earlier

    async def record_post(self, message_key: str, target_key: str, ref: ChatRef,
                          conversation_id: str, message_id: str = "",
                          entry_id: str = "") -> None:
        field = f"{message_key}|{target_key}"
        self.posts[field] = ref
        self.posting.pop(field, None)
        self.thread_roots.setdefault(conversation_id, {}).setdefault(target_key, ref)
        if message_id:
            self.message_index.setdefault(message_id, conversation_id)
        shows = f"{conversation_id}/{entry_id}"
        self.chat_messages[f"{ref.network.value}:{ref.room}:{ref.message}"] = shows
        self.room_latest[f"{ref.network.value}:{ref.room}"] = shows

    async def latest_in(self, network: Network, room: str) -> tuple[str, str] | None:
        found = self.room_latest.get(f"{network.value}:{room}")
        if found is None:
            return None
        cid, _, eid = found.partition("/")
        return cid, eid

    async def shown_in(self, network: Network, room: str, message: str
                       ) -> tuple[str, str] | None:
        found = self.chat_messages.get(f"{network.value}:{room}:{message}")
        if found is None:
            return None
        cid, _, eid = found.partition("/")
        return cid, eid
