"""Retention and erasure on Redis: history older than the retention age goes, in bounded
batches; a person's data goes on request (their history entries, address-book entries,
reply tokens and pending deliveries). Metering keeps only counts and sizes per customer,
never a person, so it has nothing of theirs to erase."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from bot.model import Address, DeliveryState, HistoryEntry
from bot.stores import Erased
from storage.codec import load_entry
from storage.connection import RedisBacked, text

_SEP = "/"


@dataclass(frozen=True)
class _Found:
    member: str  # conversation/entry
    entry: HistoryEntry | None


class RedisErasure(RedisBacked):
    async def expire_history(self, before: float, batch: int) -> int:
        """Remove up to ``batch`` of the oldest entries written before ``before`` (with
        their places in every timeline and their Message-ID's index); how many went."""
        async with self._translated("finding expired history"):
            members = [text(m) for m in await self.redis.zrangebyscore(
                self.keys.history_index(), "-inf", f"({before!r}", start=0, num=batch)]
        if not members:
            return 0
        await self._remove(await self._read(members))
        return len(members)

    async def _read(self, members: Sequence[str]) -> list[_Found]:
        async with self._translated("reading history to remove"), \
                self.redis.pipeline(transaction=False) as pipe:
            for member in members:
                cid, _, eid = member.partition(_SEP)
                pipe.hget(self.keys.conversation_entries(cid), eid)
            records: list[str | None] = await pipe.execute()
        return [_Found(m, load_entry(r) if r is not None else None)
                for m, r in zip(members, records, strict=True)]

    async def _remove(self, found: Sequence[_Found]) -> None:
        conversations: set[str] = set()
        async with self._translated("removing history"), \
                self.redis.pipeline(transaction=True) as pipe:
            for item in found:
                cid, _, eid = item.member.partition(_SEP)
                conversations.add(cid)
                pipe.hdel(self.keys.conversation_entries(cid), eid)
                pipe.zrem(self.keys.conversation_timeline(cid), eid)
                pipe.zrem(self.keys.history_index(), item.member)
                if item.entry is not None:
                    for address in item.entry.participants:
                        pipe.zrem(self.keys.person_history(str(address)), item.member)
                    message_id = item.entry.meta.get("message_id")
                    if message_id:
                        pipe.hdel(self.keys.message_index(), message_id)
            await pipe.execute()
            # A conversation with nothing left keeps nothing: its threads go too.
            for cid in conversations:
                pipe.zcard(self.keys.conversation_timeline(cid))
            left = await pipe.execute()
            for cid, count in zip(conversations, left, strict=True):
                if int(count) == 0:
                    pipe.delete(self.keys.conversation_entries(cid),
                                self.keys.conversation_timeline(cid),
                                self.keys.conversation_threads(cid))
            await pipe.execute()

    async def forget(self, addresses: Sequence[Address]) -> Erased:
        """Erase what is kept of the person known by ``addresses``."""
        entries = 0
        for address in addresses:
            while True:
                async with self._translated("reading a person's history"):
                    members = [text(m) for m in await self.redis.zrange(
                        self.keys.person_history(str(address)), 0, 499)]
                if not members:
                    break
                await self._remove(await self._read(members))
                entries += len(members)
                async with self._translated("emptying a person's timeline"):
                    await self.redis.zrem(self.keys.person_history(str(address)), *members)
        tokens = 0
        for address in addresses:
            key = self.keys.reply_tokens_of(str(address))
            async with self._translated("revoking a person's reply tokens"):
                issued = [text(t) for t in await self.redis.smembers(key)]
                if issued:
                    tokens += int(await self.redis.delete(
                        *(self.keys.reply_token(t) for t in issued)))
                await self.redis.delete(key)
        deliveries = await self._forget_deliveries(addresses)
        return Erased(entries, tokens, deliveries)

    async def _forget_deliveries(self, addresses: Sequence[Address]) -> int:
        """Deliveries from or to the person that are not over: deleted with their logs."""
        wanted = {str(a) for a in addresses}
        removed = 0
        for state in (DeliveryState.PENDING, DeliveryState.QUEUED, DeliveryState.FAILED):
            key = self.keys.deliveries_in_state(state.value)
            async with self._translated("finding a person's pending deliveries"):
                ids = [text(i) for i in await self.redis.zrange(key, 0, -1)]
                async with self.redis.pipeline(transaction=False) as pipe:
                    for delivery_id in ids:
                        pipe.hmget(self.keys.delivery(delivery_id), ["sender", "recipient"])
                    people: list[list[str | None]] = await pipe.execute()
            for delivery_id, (sender, recipient) in zip(ids, people, strict=True):
                if sender in wanted or recipient in wanted:
                    async with self._translated("erasing a delivery"), \
                            self.redis.pipeline(transaction=True) as pipe:
                        pipe.delete(self.keys.delivery(delivery_id),
                                    self.keys.delivery_log(delivery_id))
                        pipe.zrem(key, delivery_id)
                        if sender:
                            pipe.zrem(self.keys.deliveries_by_sender(sender), delivery_id)
                        await pipe.execute()
                    removed += 1
        return removed
