"""Search across everything said, on either side: emails, replies in chat and by email,
attachment names, as the asker may read them.

Who may read an entry is decided inside the index's query, never after fetching: every
entry carries the viewer tokens of its conversation (each participant, each room it was
posted in), and the asker's query is limited to the tokens that are theirs (their own
addresses, the rooms they are in). Counts and timing then say nothing of what is hidden:
a private conversation gives the same answer as no match.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import re
import shlex
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from bot.errors import BridgeError, StoreError
from bot.model import Address, AddressError, ChatRef, ChatTarget, EntryKind, Network
from bot.ports import ChatNetwork, Choice, Notice
from bot.render import render
from bot.stores import AddressBook
from bot.text import unlinked

PAGE = 5  # hits shown at a time
QUERY_LIMIT = 500  # characters of a search


class SearchError(Exception):
    """A search that cannot be run as typed; the message says how to type it."""


def viewer_token(address: Address) -> str:
    """The index's token for a person: the same for every spelling of the address."""
    return "p" + hashlib.sha1(str(address).lower().encode()).hexdigest()[:16]


def room_token(target_key: str) -> str:
    """The index's token for a room (a chat target key, ``slack:room:C…``)."""
    return "r" + hashlib.sha1(target_key.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class SearchQuery:
    words: tuple[str, ...] = ()
    phrases: tuple[str, ...] = ()
    senders: tuple[Address, ...] = ()  # from:
    recipients: tuple[Address, ...] = ()  # to:
    rooms: tuple[str, ...] = ()  # in: (room tokens)
    before: float | None = None
    after: float | None = None
    attachments: bool = False  # has:attachment
    page: int = 1

    @property
    def empty(self) -> bool:
        return not (self.words or self.phrases or self.senders or self.recipients
                    or self.rooms or self.attachments or self.before or self.after)

    def text(self) -> str:
        """The query as it would be typed again (for the next page)."""
        parts = [*self.words, *(f'"{p}"' for p in self.phrases),
                 *(f"from:{a.value}" for a in self.senders),
                 *(f"to:{a.value}" for a in self.recipients)]
        if self.attachments:
            parts.append("has:attachment")
        if self.before:
            parts.append("before:" + datetime.fromtimestamp(self.before, UTC).strftime("%Y-%m-%d"))
        if self.after:
            parts.append("after:" + datetime.fromtimestamp(self.after - 86400, UTC
                                                           ).strftime("%Y-%m-%d"))
        return " ".join(parts)


@dataclass(frozen=True)
class SearchHit:
    conversation_id: str
    entry_id: str
    kind: EntryKind
    sender: str  # an address's text
    at: float
    subject: str
    snippet: str  # the part of its text around the words found
    posted: str = ""  # "network:room:message ..." where it was posted (history meta)
    name: str = ""  # the sender's display name where history kept one


@dataclass(frozen=True)
class SearchPage:
    total: int
    hits: tuple[SearchHit, ...]


class SearchIndex(Protocol):
    async def unavailable(self) -> str | None:
        """Why search cannot run here (the store has no query engine), or None."""
        ...

    async def search(self, query: SearchQuery, viewers: Sequence[str] | None,
                     offset: int, limit: int) -> SearchPage:
        """The entries matching ``query`` that carry one of ``viewers`` (None: all),
        newest first."""
        ...


def parse_search(text: str, rooms: dict[str, str] | None = None) -> SearchQuery:
    """What a person typed: words, "quoted phrases", from:, to:, in:, before:, after:
    (YYYY-MM-DD), has:attachment, page:N. ``rooms``: how ``in:`` names are known
    (#name or id -> target key)."""
    if len(text) > QUERY_LIMIT:
        raise SearchError(f"a search has at most {QUERY_LIMIT} characters")
    try:
        parts = shlex.split(text.replace("“", '"').replace("”", '"'), posix=True)
    except ValueError:
        raise SearchError("a quote is not closed: write phrases like \"refund policy\"") \
            from None
    words: list[str] = []
    phrases: list[str] = []
    found: dict[str, list[object]] = {"from": [], "to": [], "in": []}
    before = after = None
    attachments = False
    page = 1
    for part in parts:
        name, sep, value = part.partition(":")
        name = name.lower()
        if sep and name in ("from", "to") and value:
            try:
                found[name].append(Address.parse(unlinked(value)))
            except AddressError as exc:
                raise SearchError(f"{name}:{value}: {exc}") from None
        elif sep and name == "in" and value:
            key = (rooms or {}).get(value.lower()) or (rooms or {}).get(unlinked(value).lower())
            if key is None:
                raise SearchError(f"in:{value}: no channel or room Switchboard posts in is "
                                  "called that")
            found["in"].append(room_token(key))
        elif sep and name in ("before", "after") and value:
            try:
                day = datetime.strptime(value, "%Y-%m-%d").replace(tzinfo=UTC).timestamp()
            except ValueError:
                raise SearchError(f"{name}:{value}: write the date as YYYY-MM-DD") from None
            if name == "before":
                before = day
            else:
                after = day + 86400  # after a day: from the next one on
        elif sep and name == "has" and value.lower() in ("attachment", "attachments", "file"):
            attachments = True
        elif sep and name == "page" and value.isdigit():
            page = max(1, min(int(value), 100))
        elif " " in part.strip():
            phrases.append(" ".join(part.split()))
        else:
            words += [w for w in re.findall(r"\w+", part) if w]
    return SearchQuery(tuple(words[:20]), tuple(phrases[:5]),
                       tuple(found["from"]), tuple(found["to"]),  # type: ignore[arg-type]
                       tuple(found["in"]), before, after, attachments, page)  # type: ignore[arg-type]


@dataclass
class Search:
    """`search <words>`: the asker's viewer tokens (their addresses, the rooms they are
    in: all of it for an administrator), then one query of the index."""

    index: SearchIndex
    address_book: AddressBook
    networks: Mapping[Network, ChatNetwork]
    rooms: Callable[[], Sequence[ChatTarget]]  # the rooms Switchboard posts in
    is_admin: Callable[[Address], bool] = lambda _: False
    threads: Callable[[str], Awaitable[dict[str, ChatRef]]] | None = None

    def room_names(self) -> dict[str, str]:
        """How `in:` may name a room: its id (Slack's mention of it gives the id)."""
        names: dict[str, str] = {}
        for target in self.rooms():
            room = target.room or ""
            names[room.lower()] = target.key
            names[room.rpartition("/")[2].lower()] = target.key  # T…/C… as plain C…
        return names

    async def viewers(self, asker: Address) -> list[str] | None:
        if self.is_admin(asker):
            return None
        identity = await self.address_book.resolve(asker)
        own = identity.addresses() if identity else [asker]
        tokens = [viewer_token(a) for a in dict.fromkeys([asker, *own])]
        network = self.networks.get(asker.network)
        if network is None:
            return tokens
        rooms = list({t.key: t for t in self.rooms() if t.network is asker.network}.values())
        # Side by side: one search asks every room's network once, not one after another.
        members = await asyncio.gather(*(network.is_member(t.room or "", asker)
                                         for t in rooms), return_exceptions=True)
        for target, member in zip(rooms, members, strict=True):
            if isinstance(member, BaseException) and not isinstance(member, BridgeError):
                raise member
            if member is True:  # a room that cannot be asked about now is not searched
                tokens.append(room_token(target.key))
        return tokens

    async def run(self, asker: Address, text: str) -> Notice:
        why = await self.index.unavailable()
        if why is not None:
            return Notice(f"Search is off here: {why}.")
        try:
            query = parse_search(text, self.room_names())
        except SearchError as exc:
            return Notice(f"{exc}. {USAGE}")
        if query.empty:
            return Notice(USAGE)
        page = await self.index.search(query, await self.viewers(asker),
                                       (query.page - 1) * PAGE, PAGE)
        more = page.total > query.page * PAGE
        choices = (Choice("search", "More results", f"{query.text()} page:{query.page + 1}",
                          "query"),) if more else ()
        links = {hit.entry_id: await self.link(hit, asker.network) for hit in page.hits}
        return Notice(render("chat/search.txt.j2", hits=page.hits, total=page.total,
                             query=query, first=(query.page - 1) * PAGE, more=more,
                             snippet=lambda text: marked(text, query), when=when,
                             links=links), choices)

    async def link(self, hit: SearchHit, network: Network) -> str:
        """Where the hit can be seen, on the asker's network first: its post, else the
        thread of its conversation (an email sent from chat, a reply)."""
        refs = [ChatRef(Network(n), room, message, message) for n, room, message in (
            _ref(r) for r in hit.posted.split()) if n in ("slack", "matrix")]
        if self.threads is not None and not any(r.network is network for r in refs):
            with contextlib.suppress(StoreError):  # a link is a help, not a must
                refs += [ref for key, ref in (await self.threads(hit.conversation_id)).items()
                         if not key.startswith("dm:")]
        refs.sort(key=lambda r: r.network is not network)
        for ref in refs:
            if ref.network is Network.MATRIX:
                return f"https://matrix.to/#/{ref.room}/{ref.message}"
            team, _, channel = ref.room.rpartition("/")
            if team:
                return (f"https://app.slack.com/client/{team}/{channel}/thread/"
                        f"{channel}-{ref.thread or ref.message}")
            return f"https://slack.com/archives/{channel}/p{ref.message.replace('.', '')}"
        return ""


def _ref(posted: str) -> tuple[str, str, str]:
    """A history ``posted`` item (``network:room:message``) as its parts."""
    network, _, rest = posted.partition(":")
    room, _, message = rest.rpartition(":")
    return network, room, message


USAGE = ("`search <words>` finds what was said by email and in chat; add \"a phrase\", "
         "from:<address>, to:<address>, in:<channel>, before:/after:YYYY-MM-DD, "
         "has:attachment")
SNIPPET_LIMIT = 300


def marked(snippet: str, query: SearchQuery) -> str:
    """A snippet as a notice shows it: the words searched for in *bold* (with their
    endings: the index matches "refunds" for "refund"); the sender's own formatting
    characters made inert (the networks escape the rest: <, >, &)."""
    text = re.sub(r"[*_~`\x00-\x08\x0e-\x1f\x7f]", "",
                  " ".join(snippet.split())[:SNIPPET_LIMIT])
    words = {w.lower() for w in query.words} | {
        w.lower() for p in query.phrases for w in re.findall(r"\w+", p)}
    if not words:
        return text
    pattern = re.compile(r"\b(" + "|".join(re.escape(w) for w in sorted(words, key=len,
                                                                        reverse=True))
                         + r")\w*", re.IGNORECASE)
    return pattern.sub(lambda m: f"*{m.group(0)}*", text)


def when(at: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.gmtime(at))
