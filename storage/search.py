"""The search index, in Redis's own query engine (RediSearch): shared by every process and
host, and carried through a Sentinel failover with the rest of the store.

Each history entry has a document, a hash beside it (``sdoc:<conversation>/<entry>``),
written in the same step as the entry and removed with it. RediSearch 2 and later
(Redis 8, Redis Stack) index such hashes by their prefix as they are written; the 1.x
module (Debian's ``redis-redisearch``) is told of each one (``FT.ADDHASH``). Viewer
tokens are kept per conversation: when someone new joins it, every document of the
conversation learns them, so who may read what is decided in the query itself.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from redis import exceptions as redis_errors
from redis.asyncio.client import Pipeline

from bot.errors import StoreError
from bot.model import EntryKind, HistoryEntry
from bot.search import SearchHit, SearchPage, SearchQuery, viewer_token
from storage.codec import load_entry
from storage.connection import RedisBacked, text
from storage.keys import Keys

SCHEMA = ("subject", "TEXT", "WEIGHT", "2.0", "text", "TEXT", "files", "TEXT",
          "from", "TAG", "to", "TAG", "viewers", "TAG", "rooms", "TAG", "kind", "TAG",
          "has", "TAG", "at", "NUMERIC", "SORTABLE")
TEXT_INDEXED = 32 * 1024  # characters of a body the index reads

# KEYS: the document, the conversation's viewers, its threads, its timeline, its entries.
# ARGV: mode ("addhash": tell the 1.x module; "hash": indexed by prefix), index, the
# conversation's document prefix, this entry's participant tokens (comma-separated), the
# entry's id, how much of its text is indexed. The document is made here from the entry's
# record (written just before, in the same step): its text crosses the network once. New
# viewers reach every document of the conversation.
INDEX_ENTRY = """
local mode, index, prefix = ARGV[1], ARGV[2], ARGV[3]
local record = redis.call('HGET', KEYS[5], ARGV[5])
if not record then return 0 end
local e = cjson.decode(record)
local added = 0
for token in string.gmatch(ARGV[4], '[^,]+') do
  added = added + redis.call('SADD', KEYS[2], token)
end
local rooms = {}
for _, place in ipairs(redis.call('HKEYS', KEYS[3])) do
  if string.sub(place, 1, 3) ~= 'dm:' then
    local token = 'r' .. string.sub(redis.sha1hex(place), 1, 16)
    table.insert(rooms, token)
    added = added + redis.call('SADD', KEYS[2], token)
  end
end
local viewers = table.concat(redis.call('SMEMBERS', KEYS[2]), ',')
local roomlist = table.concat(rooms, ',')
local to, files = {}, {}
for i, a in ipairs(e['to'] or {}) do
  if i <= 100 then to[#to + 1] = string.lower((string.gsub(a, ',', ' '))) end
end
for _, a in ipairs(e['att'] or {}) do files[#files + 1] = a[1] end
local meta = e['meta'] or {}
local from = e['from'] or ''
redis.call('HSET', KEYS[1], 'viewers', viewers, 'rooms', roomlist,
  'text', string.sub(e['text'] or '', 1, tonumber(ARGV[6])),
  'subject', string.sub(e['subj'] or '', 1, 500), 'files', table.concat(files, ' '),
  'from', string.lower(from), 'sender', (string.gsub(from, '^[^:]*:', '', 1)),
  'to', table.concat(to, ','), 'kind', e['k'],
  'has', (#files > 0) and 'attachment' or 'none', 'at', tostring(e['at']),
  'cid', e['c'], 'eid', e['id'], 'posted', meta['posted'] or '', 'name', meta['name'] or '')
if mode == 'addhash' then redis.call('FT.ADDHASH', index, KEYS[1], 1.0, 'REPLACE') end
if added > 0 then
  for _, entry in ipairs(redis.call('ZRANGE', KEYS[4], 0, -1)) do
    local doc = prefix .. entry
    if doc ~= KEYS[1] and redis.call('EXISTS', doc) == 1 then
      redis.call('HSET', doc, 'viewers', viewers, 'rooms', roomlist)
      if mode == 'addhash' then redis.call('FT.ADDHASH', index, doc, 1.0, 'REPLACE') end
    end
  end
end
return 1
"""


# KEYS: a conversation's viewers, its timeline. ARGV: mode, index, its document prefix,
# then the tokens that go (an erased person's): every document left learns the new list.
DROP_VIEWERS = """
local removed = 0
for i = 4, #ARGV do removed = removed + redis.call('SREM', KEYS[1], ARGV[i]) end
if removed == 0 then return 0 end
local viewers = table.concat(redis.call('SMEMBERS', KEYS[1]), ',')
for _, entry in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
  local doc = ARGV[3] .. entry
  if redis.call('EXISTS', doc) == 1 then
    redis.call('HSET', doc, 'viewers', viewers)
    if ARGV[1] == 'addhash' then redis.call('FT.ADDHASH', ARGV[2], doc, 1.0, 'REPLACE') end
  end
end
return removed
"""


def _escaped_tag(value: str) -> str:
    return re.sub(r"([^A-Za-z0-9_])", r"\\\1", value)


def _phrase(words: str) -> str:
    return " ".join(re.findall(r"\w+", words))


def query_text(query: SearchQuery, viewers: Sequence[str] | None) -> str:
    """The RediSearch query: the words and phrases, the filters, and the viewers."""
    parts = [w for w in query.words]
    parts += [f'"{_phrase(p)}"' for p in query.phrases if _phrase(p)]
    if query.senders:
        parts.append("@from:{" + "|".join(_escaped_tag(str(a).lower())
                                          for a in query.senders) + "}")
    if query.recipients:
        parts.append("@to:{" + "|".join(_escaped_tag(str(a).lower())
                                        for a in query.recipients) + "}")
    if query.rooms:
        parts.append("@rooms:{" + "|".join(query.rooms) + "}")
    if query.attachments:
        parts.append("@has:{attachment}")
    if query.before or query.after:
        low = f"{query.after!r}" if query.after else "-inf"
        high = f"({query.before!r}" if query.before else "+inf"
        parts.append(f"@at:[{low} {high}]")
    if viewers is not None:
        parts.append("@viewers:{" + "|".join(viewers or ["nobody"]) + "}")
    return " ".join(parts)


class RedisSearch(RedisBacked):
    """The index, and whether this Redis has one (looked up once)."""

    def __init__(self, client: Any, keys: Keys) -> None:
        super().__init__(client, keys)
        self._mode: str | None = None  # "addhash", "hash", or "" (no query engine)

    async def _command(self, *args: Any) -> Any:
        """A command redis-py has no typed method for (the query engine's, MODULE)."""
        return await self.redis.execute_command(*args)  # type: ignore[no-untyped-call]

    async def mode(self) -> str:
        if self._mode is None:
            async with self._translated("asking Redis for its modules"):
                modules = await self._command("MODULE", "LIST")
            version = 0
            for module in modules or []:
                found = dict(zip(module[::2], module[1::2], strict=False)) \
                    if isinstance(module, list) else dict(module)
                name = text(found.get("name", b"") or b"")
                if name in ("ft", "search"):
                    version = int(found.get("ver", 0) or 0)
            self._mode = "" if not version else "addhash" if version < 20000 else "hash"
            if self._mode:
                await self._create()
        return self._mode

    async def _create(self) -> None:
        prefix = ("ON", "HASH", "PREFIX", "1", self.keys.search_doc_prefix()) \
            if self._mode == "hash" else ()
        try:
            async with self._translated("creating the search index"):
                await self._command("FT.CREATE", self.keys.search_index(), *prefix,
                                    "SCHEMA", *SCHEMA)
        except StoreError as exc:
            if "already exists" not in str(exc).lower():
                raise

    async def unavailable(self) -> str | None:
        if await self.mode():
            return None
        return ("the store's Redis has no query engine (RediSearch); the operator installs "
                "it: Redis 8, Redis Stack, or Debian's redis-redisearch module "
                "(`switchboard doctor` says how)")

    def index(self, pipe: Pipeline, entry: HistoryEntry, mode: str) -> None:
        """Write ``entry``'s document in ``pipe`` (the step that writes the entry)."""
        if not mode:
            return
        k, cid = self.keys, entry.conversation_id
        tokens = ",".join(viewer_token(a) for a in entry.participants)
        pipe.eval(INDEX_ENTRY, 5, k.search_doc(cid, entry.id), k.conversation_viewers(cid),
                  k.conversation_threads(cid), k.conversation_timeline(cid),
                  k.conversation_entries(cid), mode, k.search_index(), k.search_doc(cid, ""),
                  tokens, entry.id, TEXT_INDEXED)

    def remove(self, pipe: Pipeline, cid: str, eid: str, mode: str) -> None:
        if not mode:
            return
        if mode == "addhash":
            pipe.execute_command("FT.DEL", self.keys.search_index(), self.keys.search_doc(cid, eid))
        pipe.delete(self.keys.search_doc(cid, eid))

    async def drop_viewers(self, conversations: Sequence[str], tokens: Sequence[str]) -> None:
        """An erased person's tokens out of ``conversations`` (what is left of them): a
        new owner of the address does not inherit what they could read."""
        mode = await self.mode()
        if not mode or not tokens:
            return
        k = self.keys
        async with self._translated("erasing a person from the search index"), \
                self.redis.pipeline(transaction=False) as pipe:
            for cid in conversations:
                pipe.eval(DROP_VIEWERS, 2, k.conversation_viewers(cid),
                          k.conversation_timeline(cid), mode, k.search_index(),
                          k.search_doc(cid, ""), *tokens)
            await pipe.execute()

    async def search(self, query: SearchQuery, viewers: Sequence[str] | None,
                     offset: int, limit: int) -> SearchPage:
        async with self._translated("searching"):
            found = await self._command(
                "FT.SEARCH", self.keys.search_index(), query_text(query, viewers),
                "RETURN", "9", "cid", "eid", "kind", "sender", "at", "subject", "posted", "name",
                "text",
                "SUMMARIZE", "FIELDS", "1", "text", "FRAGS", "1", "LEN", "30",
                "SORTBY", "at", "DESC", "LIMIT", str(offset), str(limit))
        total, rest = int(found[0]), found[1:]
        hits = []
        for i in range(0, len(rest) - 1, 2):
            fields = {text(rest[i + 1][j]): text(rest[i + 1][j + 1])
                      for j in range(0, len(rest[i + 1]) - 1, 2)}
            hits.append(SearchHit(
                conversation_id=fields.get("cid", ""), entry_id=fields.get("eid", ""),
                kind=EntryKind(fields.get("kind", "email")),
                sender=fields.get("sender", ""),
                at=float(fields.get("at", 0) or 0), subject=fields.get("subject", ""),
                snippet=fields.get("text", ""), posted=fields.get("posted", ""),
                name=fields.get("name", "")))
        return SearchPage(total, tuple(hits))

    async def reindex(self, batch: int = 500) -> int:
        """The index built again from history (`switchboard search reindex`): dropped,
        created, and every entry's document written anew, oldest first; how many."""
        mode = await self.mode()
        if not mode:
            raise StoreError(str(await self.unavailable()))
        async with self._translated("dropping the search index"):
            try:
                if mode == "addhash":
                    await self._command("FT.DROP", self.keys.search_index(), "KEEPDOCS")
                else:
                    await self._command("FT.DROPINDEX", self.keys.search_index())
            except redis_errors.ResponseError:
                pass  # there was none
        await self._create()
        done, start = 0, 0
        while True:
            async with self._translated("reading history to index"):
                members = [text(m) for m in await self.redis.zrange(
                    self.keys.history_index(), start, start + batch - 1)]
            if not members:
                return done
            async with self._translated("reading history to index"), \
                    self.redis.pipeline(transaction=False) as pipe:
                for member in members:
                    cid, _, eid = member.partition("/")
                    pipe.hget(self.keys.conversation_entries(cid), eid)
                records = await pipe.execute()
            entries = [load_entry(text(r)) for r in records if r is not None]
            async with self._translated("reindexing history"), \
                    self.redis.pipeline(transaction=False) as pipe:
                for entry in entries:
                    self.index(pipe, entry, mode)
                await pipe.execute()
            done += len(entries)
            start += batch
