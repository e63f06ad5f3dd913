"""The ingest path's Redis work in two round trips: what an arriving email needs to be
routed (one script), and what it leaves behind once posted (one pipeline). Each email
otherwise cost a dozen sequential round trips (rates, Message-ID index, threads, the
sender's and recipients' identities, the post record, the index, history)."""

from __future__ import annotations

import time
from collections.abc import Sequence

from bot.metering import Transaction
from bot.model import Address, ChatRef, HistoryEntry, Identity
from bot.stores import Arrival
from storage.codec import dump_entry, load_mapping
from storage.connection import Redis, RedisBacked, text
from storage.conversations import BEGIN_FUNCTION, RECORD_POST, chat_key, dump_ref, load_ref
from storage.history import APPEND_ENTRY, check_id, entry_keys
from storage.keys import Keys
from storage.ratelimit import HIT_FUNCTION
from storage.search import RedisSearch
from storage.usage import add_usage

# KEYS: message index, address index, sender rate counter (unused without a sender),
# posts, posting. ARGV: known conversation or "", new conversation, Message-ID, sender
# limit, sender window, has sender (0/1), conversation limit, conversation window,
# conversation rate key prefix, conversation rate key suffix, threads key prefix, threads
# key suffix, identity key prefix, now, number of answers N, the N answers, number of
# new-conversation places M, the M places, then the addresses to look up. Keys built
# here from prefixes are the same ones the stores use one by one; the begun posts are
# conversations.py's BEGIN_FUNCTION, place by place; rates are ratelimit.py's HIT_FUNCTION.
_ARRIVE = HIT_FUNCTION + BEGIN_FUNCTION + """
local sender_ok = 1
if ARGV[6] == '1' and hit(KEYS[3], ARGV[5], ARGV[3]) > tonumber(ARGV[4]) then
  sender_ok = 0
end
local n = tonumber(ARGV[15])
local m = tonumber(ARGV[16 + n])
local cid = ARGV[1]
local existing = 0
if cid ~= '' then
  existing = 1
else
  for i = 16, 15 + n do
    local found = redis.call('HGET', KEYS[1], ARGV[i])
    if found then cid = found existing = 1 break end
  end
  if cid == '' then cid = redis.call('HGET', KEYS[1], ARGV[3]) or ARGV[2] end
end
local conversation_ok = 1
if sender_ok == 1 and hit(ARGV[9] .. cid .. ARGV[10], ARGV[8], ARGV[3]) > tonumber(ARGV[7]) then
  conversation_ok = 0
end
local threads = redis.call('HGETALL', ARGV[11] .. cid .. ARGV[12])
local begun = {}
if existing == 0 and sender_ok == 1 and conversation_ok == 1 then
  for i = 17 + n, 16 + n + m do
    local ref, earlier = begin(KEYS[4], KEYS[5], ARGV[3] .. '|' .. ARGV[i], ARGV[14])
    table.insert(begun, {ARGV[i], ref, earlier})
  end
end
local identities = {}
for i = 17 + n + m, #ARGV do
  local id = redis.call('HGET', KEYS[2], ARGV[i])
  if id then
    table.insert(identities, {ARGV[i], id, redis.call('HGETALL', ARGV[13] .. id)})
  end
end
return {cid, existing, sender_ok, conversation_ok, threads, identities, begun}
"""


def _split(keyed: str, marker: str) -> tuple[str, str]:
    """A key built for ``marker`` cut around it: what goes before and after a value."""
    before, _, after = keyed.partition(marker)
    return before, after


class RedisArrivals(RedisBacked):
    def __init__(self, client: Redis, keys: Keys, search: RedisSearch | None = None) -> None:
        super().__init__(client, keys)
        self.search = search  # an email's document is written with its entry
        # By its SHA (EVALSHA): the script's text is sent once, not with every email.
        self._arrive = client.register_script(_ARRIVE)

    async def arrive(self, *, message_id: str, answers: Sequence[str],
                     conversation: str | None, new_conversation: str,
                     sender: Address | None, people: Sequence[Address],
                     sender_rate: tuple[int, int], conversation_rate: tuple[int, int],
                     new_places: Sequence[str] = ()) -> Arrival:
        now = int(time.time())
        (s_limit, s_window), (c_limit, c_window) = sender_rate, conversation_rate
        sender_key = self.keys.rate(f"sender:{sender}", now // s_window) if sender else \
            self.keys.rate("sender:", 0)
        rate_before, rate_after = _split(self.keys.rate("conversation:\0", now // c_window),
                                         "\0")
        threads_before, threads_after = _split(self.keys.conversation_threads("\0"), "\0")
        lookups = list(dict.fromkeys([*([sender] if sender else []), *people]))
        async with self._translated("reading what an arriving email needs"):
            cid, existing, sender_ok, conversation_ok, threads, found, begun = \
                await self._arrive(
                    keys=[self.keys.message_index(), self.keys.address_index(), sender_key,
                          self.keys.posts(), self.keys.posting()],
                    args=[conversation or "", new_conversation, message_id, s_limit,
                          s_window, "1" if sender else "0", c_limit, c_window, rate_before,
                          rate_after, threads_before, threads_after, self.keys.identity(""),
                          repr(time.time()), len(answers), *answers, len(new_places),
                          *new_places, *(str(a) for a in lookups)])
        identities = {}
        by_address = {str(a): a for a in lookups}
        for address, identity_id, records in found:
            pairs = [text(r) for r in records]
            mappings = sorted((load_mapping(pairs[i], pairs[i + 1])
                               for i in range(0, len(pairs), 2)),
                              key=lambda m: (m.added_at, str(m.address)))
            if mappings:
                identities[by_address[text(address)]] = Identity(text(identity_id),
                                                                 tuple(mappings))
        flat = [text(t) for t in threads]
        return Arrival(
            conversation_id=text(cid), existing=bool(int(existing)),
            within_sender_rate=bool(int(sender_ok)),
            within_conversation_rate=bool(int(conversation_ok)),
            threads={flat[i]: load_ref(flat[i + 1]) for i in range(0, len(flat), 2)},
            identities=identities,
            begun={text(place): (load_ref(text(ref)) if ref else None, bool(int(earlier)))
                   for place, ref, earlier in begun})

    async def settle(self, *, message_key: str, target_key: str, ref: ChatRef | None,
                     entry: HistoryEntry, usage: Sequence[Transaction] = ()) -> bool:
        cid = entry.conversation_id
        check_id("conversation", cid)
        check_id("entry", entry.id)
        message_id = entry.meta.get("message_id", "")
        k = self.keys
        history_keys = entry_keys(k, entry)
        mode = await self.search.mode() if self.search is not None else ""
        async with (self._translated(f"recording an email of conversation {cid}"),
                    self.redis.pipeline(transaction=True) as pipe):
            if ref is not None:
                pipe.eval(RECORD_POST, 6, k.posts(), k.conversation_threads(cid),
                          k.message_index(), k.chat_messages(), k.posting(), k.room_latest(),
                          f"{message_key}|{target_key}", dump_ref(ref), target_key, message_id,
                          cid, chat_key(ref.network, ref.room, ref.message),
                          f"{cid}/{entry.id}", f"{ref.network.value}:{ref.room}")
            if message_id:
                pipe.hsetnx(k.message_index(), message_id, cid)
            pipe.eval(APPEND_ENTRY, len(history_keys), *history_keys, entry.id, dump_entry(entry),
                      repr(entry.at), f"{cid}/{entry.id}", repr(time.time()))
            for tx in usage:
                add_usage(pipe, k, tx)
            if self.search is not None:
                self.search.index(pipe, entry, mode)
            answers = await pipe.execute()
        return bool(answers[-1 - len(usage) - (1 if self.search is not None and mode else 0)])
