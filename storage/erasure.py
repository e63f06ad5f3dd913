"""Retention and erasure on Redis: history older than the retention age goes, in bounded
batches; a person's data goes on request: their history entries, reply tokens, every
delivery from, to or about them with its log, their audit pseudonym (the trail's entries
then name "an erased person"), and then a sweep of every key under the prefix for what
is left: keys named after them (rate windows, posts to their DM, ...) go, and their
addresses are cut out of any other value. Metering keeps only counts and sizes per
customer, never a person (its transaction stream is not swept: see the README)."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Sequence
from dataclasses import dataclass

from bot.model import Address, AddressError, DeliveryState, HistoryEntry
from bot.search import viewer_token
from bot.stores import Erased
from storage.codec import load_context, load_entry
from storage.connection import Redis, RedisBacked, text
from storage.keys import Keys
from storage.search import RedisSearch

_SEP = "/"
REDACTED = "[erased]"
SWEEP_BATCH = 500
# KEYS: a batch of keys. ARGV: redaction text, then the needles (lower case). Per key: one
# named after a needle goes; a string holding one goes; a hash loses fields named after
# one and has it cut out of values; a list has it cut out of items; set and sorted-set
# members holding one go (they are references, not text). Streams are left (the audit
# trail names people by pseudonym; the usage stream by customer). Counts what changed.
_SWEEP = """
local function holds(value)
  local low = string.lower(value)
  for i = 2, #ARGV do
    if string.find(low, ARGV[i], 1, true) then return true end
  end
  return false
end
local function cut(value)
  local low = string.lower(value)
  for i = 2, #ARGV do
    local needle = ARGV[i]
    local from = string.find(low, needle, 1, true)
    while from do
      value = string.sub(value, 1, from - 1) .. ARGV[1] .. string.sub(value, from + #needle)
      low = string.lower(value)
      from = string.find(low, needle, from + #ARGV[1], true)
    end
  end
  return value
end
local changed = 0
for _, key in ipairs(KEYS) do
  local kind = redis.call('TYPE', key)['ok']
  if holds(key) then
    redis.call('DEL', key); changed = changed + 1
  elseif kind == 'string' then
    if holds(redis.call('GET', key)) then redis.call('DEL', key); changed = changed + 1 end
  elseif kind == 'hash' then
    local all = redis.call('HGETALL', key)
    for i = 1, #all, 2 do
      if holds(all[i]) then redis.call('HDEL', key, all[i]); changed = changed + 1
      elseif holds(all[i + 1]) then
        redis.call('HSET', key, all[i], cut(all[i + 1])); changed = changed + 1
      end
    end
  elseif kind == 'list' then
    local items = redis.call('LRANGE', key, 0, -1)
    for i = 1, #items do
      if holds(items[i]) then
        redis.call('LSET', key, i - 1, cut(items[i])); changed = changed + 1
      end
    end
  elseif kind == 'set' then
    for _, m in ipairs(redis.call('SMEMBERS', key)) do
      if holds(m) then redis.call('SREM', key, m); changed = changed + 1 end
    end
  elseif kind == 'zset' then
    for _, m in ipairs(redis.call('ZRANGE', key, 0, -1)) do
      if holds(m) then redis.call('ZREM', key, m); changed = changed + 1 end
    end
  end
end
return changed
"""


@dataclass(frozen=True)
class _Found:
    member: str  # conversation/entry
    entry: HistoryEntry | None


class RedisErasure(RedisBacked):
    def __init__(self, client: Redis, keys: Keys, search: RedisSearch | None = None) -> None:
        super().__init__(client, keys)
        self.search = search  # an entry's document goes with it, in the same step

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
        mode = await self.search.mode() if self.search is not None else ""
        async with self._translated("removing history"), \
                self.redis.pipeline(transaction=True) as pipe:
            for item in found:
                cid, _, eid = item.member.partition(_SEP)
                conversations.add(cid)
                if self.search is not None:
                    self.search.remove(pipe, cid, eid, mode)
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
                                self.keys.conversation_threads(cid),
                                self.keys.conversation_viewers(cid))
            await pipe.execute()

    async def forget(self, addresses: Sequence[Address]) -> Erased:
        """Erase what is kept of the person known by ``addresses``."""
        entries = 0
        conversations: set[str] = set()
        for address in addresses:
            while True:
                async with self._translated("reading a person's history"):
                    members = [text(m) for m in await self.redis.zrange(
                        self.keys.person_history(str(address)), 0, 499)]
                if not members:
                    break
                conversations |= {m.partition(_SEP)[0] for m in members}
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
        if self.search is not None:
            await self.search.drop_viewers(sorted(conversations),
                                           [viewer_token(a) for a in addresses])
        deliveries = await self._forget_deliveries(addresses)
        await self._forget_pseudonyms(addresses)
        await self._sweep(addresses)
        return Erased(entries, tokens, deliveries)

    async def receipt(self, person: Address) -> str:
        """A keyed digest of ``person`` (the key is this deployment's, in the store): it
        confirms an erasure to whoever asks about that address, and names no one."""
        async with self._translated("reading the erasure key"):
            await self.redis.set(self.keys.erasure_key(), secrets.token_hex(32), nx=True)
            key = text(await self.redis.get(self.keys.erasure_key()))
        return hmac.new(key.encode(), str(person).encode(), hashlib.sha256).hexdigest()[:24]

    async def _forget_pseudonyms(self, addresses: Sequence[Address]) -> None:
        async with self._translated("dropping a person's audit pseudonym"):
            tokens = await self.redis.hmget(self.keys.audit_people(),
                                            [str(a) for a in addresses])
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.hdel(self.keys.audit_people(), *(str(a) for a in addresses))
                for token in tokens:
                    if token is not None:
                        pipe.hdel(self.keys.audit_pseudonyms(), text(token))
                await pipe.execute()

    async def _sweep(self, addresses: Sequence[Address]) -> int:
        """What the targeted steps did not reach, wherever it is under the prefix."""
        # An address's value is in its canonical form too (``email:…``, ``slack:…``).
        needles = sorted({a.value.lower() for a in addresses}, key=len, reverse=True)
        changed = 0
        batch: list[str] = []
        async with self._translated("sweeping the store for a person's traces"):
            async for key in self.redis.scan_iter(match=f"{self.keys.prefix}:*",
                                                  count=SWEEP_BATCH):
                batch.append(text(key))
                if len(batch) >= SWEEP_BATCH:
                    changed += int(await self.redis.eval(_SWEEP, len(batch), *batch,
                                                         REDACTED, *needles))
                    batch = []
            if batch:
                changed += int(await self.redis.eval(_SWEEP, len(batch), *batch, REDACTED,
                                                     *needles))
        return changed

    async def _forget_deliveries(self, addresses: Sequence[Address]) -> int:
        """Deliveries from, to or about the person, in every state: deleted with their
        logs (a finished one's context names them too)."""
        wanted = {str(a) for a in addresses}
        emails = {a.value for a in addresses if a.network.value == "email"}
        removed = 0
        for state in DeliveryState:
            key = self.keys.deliveries_in_state(state.value)
            async with self._translated("finding a person's deliveries"):
                ids = [text(i) for i in await self.redis.zrange(key, 0, -1)]
                async with self.redis.pipeline(transaction=False) as pipe:
                    for delivery_id in ids:
                        pipe.hmget(self.keys.delivery(delivery_id),
                                   ["sender", "recipient", "meta"])
                    people: list[list[str | None]] = await pipe.execute()
            for delivery_id, (sender, recipient, meta) in zip(ids, people, strict=True):
                context = _context_people(meta)
                if sender in wanted or recipient in wanted or context & (wanted | emails):
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


def _context_people(meta: str | None) -> set[str]:
    """Whom a delivery's context names (the email it answers, the person asked for)."""
    try:
        context = load_context(meta) if meta else None
    except (ValueError, KeyError, AddressError):
        return set()
    if context is None:
        return set()
    return {v for v in (context.email.value if context.email else "",
                        context.person.lower(), *(a.value for a in context.cc)) if v}
