"""The commands of a room's admins: its routes (`route add|set|remove|list`), its
`status`, and the decisions on held mail (`post`, `discard`, `allow`). Typed in the
channel or room they are about; the same on Slack and Matrix."""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass

from bot.audit import AuditAction, AuditEvent, AuditLog, record_or_log
from bot.blocks import EVERYWHERE, BlockError, BlockList, blocked_form
from bot.errors import BridgeError, StoreError
from bot.held import Decision
from bot.model import Address, DeliveryState, EntryKind, Network
from bot.ports import Notice
from bot.review import Review, RoomAdmins, place
from bot.routes import OPTION_NAMES, TEXT_OPTIONS, Route, RouteBook, RouteError, route_option
from bot.stores import Beats, Conversations, Deliveries, History
from bot.text import unlinked

log = logging.getLogger(__name__)
_HELD_ID = re.compile(r"h[0-9a-f]{16}")
_OPTION = re.compile(rf"^({'|'.join(OPTION_NAMES)})=(.*)$", re.IGNORECASE)
ROUTE_HELP = ("`route add <address> [display name] [replies=email|internal] "
              "[attachments=post|names|hold] [senders=any|verified]` connects an address "
              "to this room; `route set <address> <options>`, `route remove <address>`, "
              "`route list`.")


class RoomCommandError(Exception):
    """What the admin typed cannot be done; the message says why."""


@dataclass(frozen=True)
class Where:
    user: Address
    network: Network
    room: str | None  # None: typed in a direct chat with the bot


@dataclass
class RoomCommands:
    routes: RouteBook
    admins: RoomAdmins
    review: Review | None = None
    conversations: Conversations | None = None
    history: History | None = None
    deliveries: Deliveries | None = None
    beats: Beats | None = None
    audit: AuditLog | None = None
    blocks: BlockList | None = None

    async def run(self, verb: str, rest: str, where: Where) -> Notice:
        try:
            if verb == "route":
                return await self._route(rest, where)
            if verb == "status":
                return await self._status(where)
            if verb in ("block", "unblock"):
                return await self._block(verb, rest, where)
            return await self._decide(verb, rest, where)
        except (RoomCommandError, RouteError, BlockError) as exc:
            return Notice(str(exc))
        except BridgeError as exc:
            return Notice(f"Switchboard could not ask {where.network.value.title()} about "
                          f"this room ({exc}); try again in a moment.")
        except StoreError as exc:
            log.error("a room command failed on the store: %s", exc)
            return Notice("Switchboard's store is unavailable; nothing was changed. Try again "
                          "in a moment.")

    # --- routes --------------------------------------------------------------------

    async def _route(self, rest: str, where: Where) -> Notice:
        sub, _, args = rest.strip().partition(" ")
        sub = sub.lower()
        if sub in ("", "help"):
            return Notice(ROUTE_HELP)
        if sub == "list":
            return self._list(where)
        if sub not in ("add", "set", "remove"):
            raise RoomCommandError(f"Unknown `route {sub}`. " + ROUTE_HELP)
        room = self._room(where, f"route {sub}")
        words = args.split()
        if not words:
            raise RoomCommandError(f"`route {sub}` needs the email address. " + ROUTE_HELP)
        address = unlinked(words[0])
        refused = await self.admins.refusal(where.user, where.network, room,
                                            "change this room's routes")
        if refused is not None:
            raise RoomCommandError(f"Not allowed: {refused}.")
        if sub == "remove":
            route = await self.routes.remove(address, where.network, room)
            await self._record(where.user, route, "removed")
            return Notice(f"Removed: mail to {route.address} no longer comes here.")
        options = _options(words[1:], naming=sub == "add")
        if sub == "add":
            chat = self.admins.networks.get(where.network)
            why = await chat.cannot_post(room) if chat is not None else "not connected"
            if why is not None:
                raise RoomCommandError(f"Not connected: {why}.")
            route = await self.routes.add(address, where.network, room, where.user, options)
            await self._record(where.user, route, "added")
            return Notice(f"Connected: mail to {route.address} now comes to this room "
                          f"({_describe(route)}). Change it with `route set`, or "
                          f"`route remove {route.address}`.")
        if not options:
            raise RoomCommandError("`route set <address>` needs options to change, like "
                                   "`senders=verified` or `name=Support desk`")
        route = await self.routes.change(address, where.network, room, where.user, options)
        await self._record(where.user, route, "changed")
        return Notice(f"Changed: {route.address} ({_describe(route)}).")

    def _list(self, where: Where) -> Notice:
        admin = self.admins.permissions is None or self.admins.permissions.is_admin(where.user)
        shown = [r for r in self.routes.all() if admin or _same_organisation(r, where.user)]
        if not shown:
            return Notice("No routes yet. In a channel or room, its admins connect an "
                          "address with `route add <address>`.")
        here = [r for r in shown if r.network == where.network.value and r.room == where.room]
        lines = ["Routes (where each came from):"]
        for route in [*here, *(r for r in shown if r not in here)]:
            spot = "here" if route in here else place(route.network, route.room)
            lines.append(f"  {route.address} → {spot}: {_describe(route)}")
        return Notice("\n".join(lines))

    async def _record(self, user: Address, route: Route, what: str) -> None:
        await record_or_log(self.audit, AuditEvent(
            AuditAction.ROUTE_CHANGED, str(user), f"{route.network}:{route.room}",
            f"{what} {route.address} ({route.options_text()})"))

    # --- status ----------------------------------------------------------------------

    async def _status(self, where: Where) -> Notice:
        room = self._room(where, "status")
        refused = await self.admins.refusal(where.user, where.network, room,
                                            "see this room's status")
        if refused is not None:
            raise RoomCommandError(f"Not allowed: {refused}.")
        lines = [f"Status of this {place(where.network.value, room)}"]
        routes = self.routes.in_room(where.network, room)
        lines.append("Routes here:" if routes else "Routes here: none (`route add "
                     "<address>` connects one)")
        lines += [f"  {r.address}: {_describe(r)}" for r in routes]
        lines.append(await self._last_bridged(where.network, room))
        if self.review is not None:
            held = await self.review.held.waiting(where.network, room, 10)
            lines.append(f"Held for admins here: {len(held)}{'+' if len(held) == 10 else ''}")
            for h in held:
                when = time.strftime("%m-%d %H:%M", time.gmtime(h.at))
                lines.append(f"  {h.id} {when} from {h.sender or '(unknown)'}: "
                             f"{(h.subject or '(no subject)')[:60]} — {h.reason[:120]}")
            if held:
                lines.append("  Decide with `post <id>`, `discard <id>` or `allow <id>`.")
        if self.deliveries is not None:
            counts = await self.deliveries.count_by_state()
            lines.append(f"Replies waiting for their recipient (all rooms): "
                         f"{counts.get(DeliveryState.QUEUED, 0)} queued, "
                         f"{counts.get(DeliveryState.FAILED, 0)} failed")
        if self.blocks is not None:
            blocked = await self.blocks.listed([EVERYWHERE, *(r.address for r in routes)])
            stopped = sum(b.count for b in blocked)
            lines.append(f"Blocked senders and domains here: {len(blocked)}, "
                         f"{stopped} email{'s' if stopped != 1 else ''} stopped"
                         + (" (`block list` names them)" if blocked else ""))
            lines += [f"  {b.describe()}" for b in blocked[:5]]
        lines += await self._health()
        return Notice("\n".join(lines))

    async def _last_bridged(self, network: Network, room: str) -> str:
        if self.conversations is None or self.history is None:
            return "Last email bridged here: unknown"
        latest = await self.conversations.latest_in(network, room)
        if latest is None:
            return "Last email bridged here: none yet"
        page = await self.history.conversation(latest[0], 0, 50)
        entry = next((e for e in page.entries if e.id == latest[1]), None)
        if entry is None or entry.kind is not EntryKind.EMAIL:
            return "Last email bridged here: none kept in history"
        when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(entry.at))
        return (f"Last email bridged here: {when} from {entry.sender.value}: "
                f"{(entry.subject or '(no subject)')[:80]}")

    async def _health(self) -> list[str]:
        if self.beats is None:
            return []
        beats = await self.beats.beats()
        if not beats:
            return ["Health: no Switchboard process has reported in the last minute "
                    "(is `switchboard run` running?)"]
        # A mailbox or a sync is held by one process at a time: it is up when any is.
        up: dict[str, bool] = {}
        waited: dict[str, float] = {}
        for beat in beats.values():
            for name, ok in beat.checks.items():
                up[name] = up.get(name, False) or ok
            for network, seconds in beat.waits.items():
                waited[network] = waited.get(network, 0.0) + seconds
        now = time.time()
        running = ", ".join(f"{process} ({max(0, int(now - beat.at))} s ago)"
                            for process, beat in sorted(beats.items()))
        return ["Health: " + ", ".join(f"{name} {'ok' if ok else 'DOWN'}"
                                       for name, ok in sorted(up.items())),
                f"  from {len(beats)} running process(es): {running}",
                *_waits(waited)]

    # --- blocks ----------------------------------------------------------------------

    async def _block(self, verb: str, rest: str, where: Where) -> Notice:
        words = rest.split()
        if self.blocks is None:
            raise RoomCommandError("Blocking is not available here.")
        if verb == "block" and (not words or words[0].lower() == "list"):
            return await self._block_list(where)
        if not words:
            raise RoomCommandError("`unblock <address|@domain> [everywhere]` lifts a block.")
        everywhere = any(w.lower() == "everywhere" for w in words[1:])
        if self.review is not None and _HELD_ID.fullmatch(words[0]):
            return await self._block_held(words[0], domain="domain" in words[1:], where=where)
        who = blocked_form(unlinked(words[0]))
        scopes = await self._block_scopes(where, everywhere, f"{verb} senders")
        changed = 0
        for scope in scopes:
            if verb == "block":
                changed += await self.blocks.add(scope, who, where.user, time.time())
            else:
                changed += await self.blocks.remove(scope, who)
        await record_or_log(self.audit, AuditEvent(
            AuditAction.BLOCK_CHANGED, str(where.user), " ".join(scopes), f"{verb} {who}"))
        on = "everywhere" if everywhere else ", ".join(scopes)
        if verb == "unblock":
            return Notice(f"Unblocked: mail from {who} to {on} is bridged again." if changed
                          else f"{who} was not blocked on {on}.")
        return Notice(f"Blocked: mail from {who} to {on} is no longer posted (nor answered); "
                      f"it is counted in `status`. `unblock {who}"
                      f"{' everywhere' if everywhere else ''}` lifts it." if changed else
                      f"{who} was blocked on {on} already.")

    async def _block_scopes(self, where: Where, everywhere: bool, what: str) -> list[str]:
        """The route addresses a block typed here holds for: this room's, or (for
        Switchboard's admins) the whole deployment."""
        if everywhere:
            if self.admins.permissions is not None \
                    and not self.admins.permissions.is_admin(where.user):
                raise RoomCommandError("Not allowed: only Switchboard's administrators block "
                                       "everywhere; a room's admins block on its routes "
                                       "(without `everywhere`).")
            return [EVERYWHERE]
        room = self._room(where, what)
        refused = await self.admins.refusal(where.user, where.network, room, what)
        if refused is not None:
            raise RoomCommandError(f"Not allowed: {refused}.")
        scopes = [r.address for r in self.routes.in_room(where.network, room)]
        if not scopes:
            raise RoomCommandError("This room has no route to block mail on; Switchboard's "
                                   "administrators can block a sender everywhere (add "
                                   "`everywhere`).")
        return scopes

    async def _block_held(self, held_id: str, *, domain: bool, where: Where) -> Notice:
        """*Block sender* on a held email: its sender is blocked on the route it was held
        for, and the email discarded."""
        assert self.review is not None and self.blocks is not None
        held = await self.review.held.get(held_id)
        if held is None or not held.sender:
            raise RoomCommandError(f"No held email {held_id} with a sender to block.")
        refused = await self.admins.refusal(where.user, Network(held.network), held.room,
                                            "block senders")
        if refused is not None:
            raise RoomCommandError(f"Not allowed: {refused}.")
        who = blocked_form("@" + held.sender.rpartition("@")[2] if domain else held.sender)
        scope = held.route or EVERYWHERE
        if scope == EVERYWHERE and self.admins.permissions is not None \
                and not self.admins.permissions.is_admin(where.user):
            raise RoomCommandError("Not allowed: this email came to no route; only "
                                   "Switchboard's administrators block everywhere.")
        await self.blocks.add(scope, who, where.user, time.time())
        await record_or_log(self.audit, AuditEvent(
            AuditAction.BLOCK_CHANGED, str(where.user), scope, f"block {who} (held {held_id})"))
        decided = await self.review.decide(held_id, Decision.DISCARDED, where.user)
        return Notice(f"Blocked {who} on {'every route' if scope == EVERYWHERE else scope}. "
                      + decided.text)

    async def _block_list(self, where: Where) -> Notice:
        assert self.blocks is not None
        admin = self.admins.permissions is None or self.admins.permissions.is_admin(where.user)
        if where.room is None and not admin:
            raise RoomCommandError("`block list` shows a room's blocks: type it in the room.")
        if where.room is None:
            scopes = [EVERYWHERE, *(r.address for r in self.routes.all())]
        else:
            refused = await self.admins.refusal(where.user, where.network, where.room,
                                                "see this room's blocks")
            if refused is not None:
                raise RoomCommandError(f"Not allowed: {refused}.")
            scopes = [EVERYWHERE, *(r.address for r in self.routes.in_room(where.network,
                                                                           where.room))]
        listed = await self.blocks.listed(scopes)
        if not listed:
            return Notice("Nothing is blocked here. `block <address|@domain>` blocks a sender "
                          "or a domain on this room's routes.")
        more = [f"  … and {len(listed) - 50} more"] if len(listed) > 50 else []
        return Notice("\n".join(["Blocked:", *(f"  {b.describe()}" for b in listed[:50]),
                                 *more]))

    # --- held mail -------------------------------------------------------------------

    async def _decide(self, verb: str, rest: str, where: Where) -> Notice:
        if self.review is None:
            raise RoomCommandError("Nothing is held for review here.")
        held_id = rest.split()[0] if rest.split() else ""
        if not held_id:
            raise RoomCommandError(f"`{verb}` needs the id of the held email, like "
                                   f"`{verb} h0123…` (see `status`)")
        decision = {"post": Decision.POSTED, "discard": Decision.DISCARDED,
                    "allow": Decision.ALLOWED}[verb]
        return await self.review.decide(held_id, decision, where.user)

    @staticmethod
    def _room(where: Where, what: str) -> str:
        if where.room is None:
            raise RoomCommandError(f"`{what}` is about the channel or room it is typed in: "
                                   "type it there, not in a direct chat with Switchboard.")
        return where.room


def _options(words: list[str], *, naming: bool) -> dict[str, object]:
    """``key=value`` options, and (for ``route add``) the other words as the name."""
    chosen: dict[str, object] = {}
    texts: dict[str, list[str]] = {}  # name=… and autoreply=… run on over the next words
    current = "name" if naming else ""
    for word in words:
        found = _OPTION.match(word)
        if found and found.group(1).lower() in TEXT_OPTIONS:
            current = found.group(1).lower()
            texts.setdefault(current, []).append(found.group(2))
            continue
        if found:
            current = "name" if naming else ""
            try:
                chosen.update(route_option(found.group(1), found.group(2)))
            except ValueError as exc:
                raise RoomCommandError(str(exc)) from None
            continue
        if not current:
            raise RoomCommandError(f"{word!r} is not an option ({', '.join(OPTION_NAMES)}=…)")
        texts.setdefault(current, []).append(word)
    for option, typed in texts.items():
        try:
            chosen.update(route_option(option, " ".join(typed)))
        except ValueError as exc:
            raise RoomCommandError(str(exc)) from None
    return chosen


def _describe(route: Route) -> str:
    named = f'"{route.name}", ' if route.name else ""
    if route.origin.value == "settings":
        came = "from the settings (read-only here)"
    else:
        day = time.strftime("%Y-%m-%d", time.gmtime(route.added_at))
        came = f"added in chat by {route.added_by} on {day}"
    allowed = f", {len(route.allowed)} sender(s) allowed" if route.allowed else ""
    return f"{named}{route.options_text()}{allowed}; {came}"


def _waits(waited: dict[str, float]) -> list[str]:
    """What the networks' rate limits cost lately, and what to do about the one that
    should cost nothing."""
    lines = []
    slack, matrix = waited.get("slack", 0.0), waited.get("matrix", 0.0)
    if slack >= 1:
        lines.append(f"Rate limits: Slack posts waited {slack:.0f} s in the last 10 "
                     "minutes for their channel's turn (Slack takes about one a second "
                     "per channel)")
    if matrix >= 1:
        lines.append(f"Rate limits: Matrix posts waited {matrix:.0f} s in the last 10 "
                     "minutes: the homeserver throttles the bot (M_LIMIT_EXCEEDED). Exempt "
                     "it, or run Switchboard as an application service: `switchboard "
                     "doctor` says how")
    return lines


def _same_organisation(route: Route, user: Address) -> bool:
    """Routes a person may see listed: their network's, and on Slack with many
    workspaces only their workspace's."""
    if route.network != user.network.value:
        return False
    team = route.room.partition("/")[0] if "/" in route.room else None
    return team is None or team == user.value.partition("/")[0]
