"""Routes: which shared mailbox address goes to which channel or room, with what rules.

Routes come from two places: the settings (a read-only base, changed by redeploying) and
chat (``route add`` by a room's admins, kept in the store). Every process keeps the
routes in memory, for the ingest path, and follows the store's version of them: a
route added in one process is in effect in all of them within a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from bot.errors import StoreError
from bot.model import Address, AddressError, ChatTarget, Network
from bot.permissions import ThreadReplies
from bot.stores import RouteStore

log = logging.getLogger(__name__)
FOLLOW_INTERVAL = 1.0  # seconds between looks at the stored routes' version
MAX_ALLOWED_SENDERS = 1000  # per route: past it, the oldest allowance goes
NAME_LIMIT = 80
CATCH_ALL = "*"  # the local part of a domain's catch-all route: *@example.com
OWN_PREFIXES = ("reply+", "bounce+")  # Switchboard's reply and return addresses


class AttachmentRule(enum.StrEnum):
    """What a route does with an email's attachments."""

    POST = "post"  # posted (blocked types and the ones past the limit are listed only)
    NAMES = "names"  # listed by name, never uploaded into this room
    HOLD = "hold"  # an email with a blocked type is held for the room's admins


class SenderRule(enum.StrEnum):
    """Whose email a route posts."""

    ANY = "any"  # everyone's; an unauthenticated sender is marked as such
    VERIFIED = "verified"  # only authenticated senders' (DKIM/SPF/DMARC); others are held


class Origin(enum.StrEnum):
    SETTINGS = "settings"  # the environment or TOML file: read-only from chat
    CHAT = "chat"  # added by a room's admin with `route add`


class RouteError(Exception):
    """A route that cannot be added or changed; the message says why and what to do."""


@dataclass(frozen=True)
class Route:
    """Mail to ``address`` goes to a Slack channel or Matrix room."""

    address: str  # normalised email address
    network: str  # "slack" or "matrix"
    room: str  # Slack channel id (``TEAM/CHANNEL`` with installs), Matrix room id or alias
    replies: ThreadReplies | None = None  # plain thread replies; None: the global setting
    name: str = ""  # how people call the mailbox ("Support desk"), shown on its posts
    attachments: AttachmentRule = AttachmentRule.POST
    senders: SenderRule = SenderRule.ANY
    origin: Origin = Origin.SETTINGS
    added_by: str = ""  # the chat address of the admin who added or last changed it
    added_at: float = 0.0
    allowed: tuple[str, ...] = ()  # senders an admin allowed past this route's holds
    autoreply: str = ""  # the automatic reply to a new conversation's sender ("": none)

    @property
    def target(self) -> ChatTarget:
        return ChatTarget(Network(self.network), room=self.room)

    def options_text(self) -> str:
        """The options as ``route set`` takes them."""
        return (f"replies={self.replies.value if self.replies else 'default'} "
                f"attachments={self.attachments.value} senders={self.senders.value}"
                + (" autoreply=on" if self.autoreply else ""))


OPTION_NAMES = ("replies", "attachments", "senders", "name", "autoreply")
TEXT_OPTIONS = ("name", "autoreply")  # their values run on over the words that follow
AUTOREPLY_LIMIT = 1000


def route_option(name: str, value: str) -> dict[str, object]:
    """One ``name=value`` route option as Route fields; ValueError saying what is allowed."""
    name, value = name.strip().lower(), value.strip()
    if name == "replies":
        if value.lower() == "default":
            return {"replies": None}
        try:
            return {"replies": ThreadReplies(value.lower())}
        except ValueError:
            raise ValueError(f"replies={value!r}: use email, internal or default") from None
    if name == "attachments":
        try:
            return {"attachments": AttachmentRule(value.lower())}
        except ValueError:
            raise ValueError(f"attachments={value!r}: use post, names or hold") from None
    if name == "senders":
        try:
            return {"senders": SenderRule(value.lower())}
        except ValueError:
            raise ValueError(f"senders={value!r}: use any or verified") from None
    if name == "name":
        return {"name": display_name(value)}
    if name == "autoreply":
        if value.lower() in ("", "off", "none"):
            return {"autoreply": ""}
        text = " ".join("".join(c if c.isprintable() else " " for c in value).split())
        if len(text) > AUTOREPLY_LIMIT:
            raise ValueError(f"an automatic reply has at most {AUTOREPLY_LIMIT} characters")
        return {"autoreply": text}
    raise ValueError(f"{name!r} is not a route option (they are {', '.join(OPTION_NAMES)})")


def display_name(text: str) -> str:
    """A mailbox's display name as it is kept: one line, printable, bounded."""
    cleaned = "".join(c if c.isprintable() else " " for c in text)
    cleaned = re.sub(r"\s+", " ", cleaned).strip().strip('"').strip()
    if len(cleaned) > NAME_LIMIT:
        raise ValueError(f"a display name has at most {NAME_LIMIT} characters")
    return cleaned


def address_tag(address: str) -> str:
    """The tag of a plus-address (``support+billing@``: ``billing``), else ""."""
    local = address.rpartition("@")[0]
    if local.startswith(OWN_PREFIXES):
        return ""
    base, plus, tag = local.partition("+")
    return tag if plus and base else ""


def receiving_domain(address: str, domains: Iterable[str]) -> bool:
    domain = address.rpartition("@")[2].lower()
    return any(domain == d or domain.endswith("." + d) for d in domains)


@dataclass(frozen=True)
class Hold:
    """Why an email is held for a room's admins instead of posted."""

    kind: str  # "unverified", "attachment", "rate", "no_route"
    reason: str


def hold_for(route: Route, sender: Address | None, verified: bool,
             blocked: Sequence[str]) -> Hold | None:
    """Whether ``route``'s rules hold an email back (None: it is posted)."""
    if sender is not None and sender.value in route.allowed:
        return None
    if route.senders is SenderRule.VERIFIED and not verified:
        who = sender.value if sender else "an unknown sender"
        return Hold("unverified", f"{who} is not authenticated (DKIM/SPF/DMARC), and "
                    f"{route.address} posts only authenticated senders' email")
    if route.attachments is AttachmentRule.HOLD and blocked:
        return Hold("attachment", f"it carries {', '.join(repr(b) for b in blocked[:3])}, "
                    "of a type that is never posted")
    return None


@dataclass
class RouteBook:
    """The routes in effect: the settings' base, then the store's, kept in memory."""

    base: Sequence[Route]
    store: RouteStore | None = None
    domains: tuple[str, ...] = ()  # the domains whose mail reaches Switchboard
    _version: int = -1
    _base: dict[str, Route] = field(init=False)
    _effective: dict[str, Route] = field(init=False)
    _rooms: dict[str, list[Route]] = field(init=False)  # by room: every post asks

    def __post_init__(self) -> None:
        self._base = {r.address: r for r in self.base}
        self._use(dict(self._base))

    def _use(self, effective: dict[str, Route]) -> None:
        rooms: dict[str, list[Route]] = {}
        for route in effective.values():
            rooms.setdefault(route.room, []).append(route)
        self._effective, self._rooms = effective, rooms

    def get(self, address: str) -> Route | None:
        """The route of ``address``: its own, else its plus-address's base
        (``support+billing@`` goes by ``support@``), else its domain's catch-all
        (``*@domain``). Reply and return addresses never fall through."""
        found = self._effective.get(address)
        if found is not None:
            return found
        local, _, domain = address.rpartition("@")
        if local.startswith(OWN_PREFIXES):
            return None
        base, plus, _ = local.partition("+")
        if plus and base:
            found = self._effective.get(f"{base}@{domain}")
        return found or self._effective.get(f"{CATCH_ALL}@{domain}")

    def exact(self, address: str) -> Route | None:
        """The route of exactly ``address`` (no plus-address or catch-all)."""
        return self._effective.get(address)

    def all(self) -> list[Route]:
        return list(self._effective.values())

    def in_room(self, network: Network, room: str) -> list[Route]:
        return [r for r in self._rooms.get(room, ()) if r.network == network.value]

    def strictest(self, network: Network, room: str) -> Route | None:
        """The route of ``room`` whose rules hold most back (a thread in the room follows
        them too)."""
        return max(self.in_room(network, room),
                   key=lambda r: (r.senders is SenderRule.VERIFIED,
                                  r.attachments is AttachmentRule.HOLD), default=None)

    def replies_rule(self, default: ThreadReplies) -> Callable[[str], ThreadReplies]:
        """The rule for plain thread replies in a room: its route's, else ``default``."""
        def rule(room: str) -> ThreadReplies:
            return next((r.replies for r in self._rooms.get(room, ()) if r.replies),
                        default)
        return rule

    async def refresh(self, force: bool = False) -> bool:
        """Read the stored routes again if they changed; whether they had."""
        if self.store is None:
            return False
        if not force and await self.store.version() == self._version:
            return False
        version, routes, allowed = await self.store.all()
        effective = {r.address: r for r in routes if r.address not in self._base}
        effective.update(self._base)
        for address, senders in allowed.items():
            if address in effective:
                effective[address] = replace(effective[address], allowed=senders)
        self._use(effective)
        self._version = version
        return True

    async def follow(self, stop: asyncio.Event) -> None:
        """Keep up with the store until ``stop``: a change anywhere is seen here within
        ``FOLLOW_INTERVAL``. An outage keeps the routes last read."""
        while not stop.is_set():
            try:
                if await self.refresh():
                    log.info("routes changed: %d in effect", len(self._effective))
            except StoreError as exc:
                log.warning("could not read the routes (the ones last read stay): %s", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), FOLLOW_INTERVAL)

    # --- changes from chat -----------------------------------------------------------

    def _check_address(self, text: str) -> str:
        try:
            address = Address.email(text).value
            if "+" in address.partition("@")[0] and not address.startswith(OWN_PREFIXES):
                raise RouteError(f"{address} is a plus-address: route "
                                 f"{address.partition('+')[0]}@{address.partition('@')[2]}, "
                                 "and its tags come along (shown on each card)")
        except AddressError as exc:
            raise RouteError(f"not a usable email address: {exc}") from None
        if not receiving_domain(address, self.domains):
            raise RouteError(f"{address} is not at a domain whose mail reaches Switchboard "
                             f"(it receives mail for {', '.join(self.domains) or 'no domain'})"
                             "; ask the operator to add the domain to `receive_domains` and "
                             "have its mail delivered to Switchboard's mailbox")
        if address.partition("@")[0].startswith(OWN_PREFIXES):
            raise RouteError(f"{address} is one of Switchboard's own reply or return "
                             "addresses; choose another")
        if address in self._base:
            raise RouteError(f"{address} is routed in Switchboard's settings; the operator "
                             "changes it there")
        return address

    def _store(self) -> RouteStore:
        if self.store is None:
            raise RouteError("routes cannot be changed from chat here (no store)")
        return self.store

    async def add(self, address: str, network: Network, room: str, by: Address,
                  options: Mapping[str, object]) -> Route:
        """A route from chat; RouteError when the address is not ours or is taken."""
        route = _with(Route(self._check_address(address), network.value, room,
                            origin=Origin.CHAT, added_by=by.value, added_at=time.time()),
                      options)
        taken = await self._store().add(route)
        await self.refresh(force=True)
        if taken is not None:
            here = taken.network == network.value and taken.room == room
            raise RouteError(f"{route.address} is already connected to "
                             f"{'this room' if here else 'another channel or room'}; "
                             f"{'change it with `route set`' if here else 'remove it there first'}")
        return route

    async def change(self, address: str, network: Network, room: str, by: Address,
                     options: Mapping[str, object]) -> Route:
        route = self._owned(self._check_address(address), network, room)
        changed = _with(replace(route, added_by=by.value, added_at=time.time(), allowed=()),
                        options)
        await self._store().replace(changed)
        await self.refresh(force=True)
        return changed

    async def remove(self, address: str, network: Network, room: str) -> Route:
        route = self._owned(self._check_address(address), network, room)
        await self._store().remove(route.address)
        await self.refresh(force=True)
        return route

    async def allow(self, address: str, sender: Address) -> None:
        """``sender``'s mail passes ``address``'s holds from now on."""
        await self._store().allow(address, sender.value, MAX_ALLOWED_SENDERS)
        await self.refresh(force=True)

    def _owned(self, address: str, network: Network, room: str) -> Route:
        route = self._effective.get(address)
        if route is None:
            raise RouteError(f"{address} has no route; `route add {address}` connects it here")
        if route.network != network.value or route.room != room:
            raise RouteError(f"{address} is connected to another channel or room; change it "
                             "there")
        return route


def _with(route: Route, options: Mapping[str, object]) -> Route:
    """``route`` with options read by ``route_option``."""
    return replace(route, **options)  # type: ignore[arg-type]
