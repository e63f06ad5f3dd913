"""Admins in chat: who administers a room, and the held mail they decide on.

A room's admins are the network's (Slack workspace admins and owners, Matrix moderators
and admins by power level) and the people named admin in the settings. They alone change
the room's routes, see its status, and decide on the mail held for it: *Post anyway*,
*Discard*, or *Allow this sender*; a decision is made once and recorded.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from bot.audit import AuditAction, AuditEvent, AuditLog, record_or_log
from bot.errors import BridgeError, StoreError, TransientFailure
from bot.held import Decision, HeldMail
from bot.model import Address, Network
from bot.permissions import Level, Permissions
from bot.ports import ChatNetwork, Choice, Notice
from bot.render import render
from bot.routes import RouteBook
from bot.stores import HeldStore, RateLimits

log = logging.getLogger(__name__)
MAX_TOLD = 10  # admins told of one held email
NOTICE_RATE = (20, 3600)  # held-mail notices per room per window; the rest wait quietly
ADMIN_SCAN = 100  # members of a room looked at to find its admins (Slack: users.info each)

# Posts a held email where it was held for; a short text of what happened.
Release = Callable[[HeldMail, bytes], Awaitable[str]]


def place(network: str, room: str) -> str:
    """A room as people are told of it."""
    if network == Network.SLACK.value:
        return f"Slack channel {room.rpartition('/')[2]}"
    return f"Matrix room {room}"


@dataclass
class RoomAdmins:
    """Who may administer a room: the network's admins, or the settings' named ones."""

    networks: Mapping[Network, ChatNetwork]
    permissions: Permissions | None

    async def refusal(self, user: Address, network: Network, room: str, what: str
                      ) -> str | None:
        """None when ``user`` administers ``room``, else why not (recorded)."""
        if self.permissions is None or self.permissions.is_admin(user):
            return None
        chat = self.networks.get(network)
        if user.network is network and chat is not None:
            try:
                if await chat.is_room_admin(room, user):
                    return None
            except BridgeError as exc:
                log.warning("could not tell whether %s administers %s: %s", user, room, exc)
                return (f"Switchboard could not ask {network.value.title()} whether you "
                        f"administer this room ({exc}); try again in a moment")
        who = ("Slack workspace admins and owners" if network is Network.SLACK
               else "the room's moderators and admins (power level 50 or more)")
        reason = (f"only this room's admins may {what}: {who}, or people named admin in "
                  "Switchboard's settings")
        return await self.permissions.refuse(user, what, reason)

    async def of(self, network: Network, room: str, also: tuple[str, ...] = ()
                 ) -> list[Address]:
        """The admins to tell about ``room``: the network's, the settings' named ones who
        are members, and ``also`` (the route's adder) when a member."""
        chat = self.networks.get(network)
        if chat is None:
            return []
        found: list[Address] = []
        try:
            found = await chat.room_admins(room, ADMIN_SCAN)
        except BridgeError as exc:
            log.warning("the admins of %s are unknown: %s", room, exc)
        for value in dict.fromkeys([*also, *self._named(network)]):
            address = Address(network, value)
            if address in found:
                continue
            try:
                if await chat.is_member(room, address):
                    found.append(address)
            except BridgeError as exc:
                log.warning("membership of %s in %s unknown: %s", address, room, exc)
        return found[:MAX_TOLD]

    def _named(self, network: Network) -> list[str]:
        """The single people the settings name admin, on ``network``."""
        if self.permissions is None:
            return []
        levels = self.permissions.rules.levels
        if network is Network.MATRIX:
            return [k for k, v in levels.items() if v >= Level.ADMIN and k.startswith("@")]
        return [k.upper() for k, v in levels.items() if v >= Level.ADMIN and "/" in k]


@dataclass
class Review:
    """Held mail, offered to the admins of the room it was for."""

    held: HeldStore
    routes: RouteBook
    admins: RoomAdmins
    audit: AuditLog | None = None
    rates: RateLimits | None = None
    release: Release | None = None  # set by the composition root (the inbound flow's)

    async def hold(self, held: HeldMail, raw: bytes) -> bool:
        if not await self.held.hold(held, raw):
            return False
        if self.rates is not None and not await self.rates.hit(
                f"held-notice:{held.network}:{held.room}", *NOTICE_RATE, held.id):
            log.info("held %s quietly: the admins of %s were told of many lately", held.id,
                     held.room)
            return True
        route = self.routes.get(held.route) if held.route else None
        admins = await self.admins.of(Network(held.network), held.room,
                                      (route.added_by,) if route and route.added_by else ())
        if not admins:
            log.warning("nobody to tell of held email %s in %s: it waits in `switchboard "
                        "pending` and `status`", held.id, held.room)
        notice = held_notice(held, allow=bool(route and held.sender) and held.kind != "rate")
        for admin in admins:
            chat = self.admins.networks[admin.network]
            try:
                await chat.notify(admin, notice, None)
            except BridgeError as exc:
                log.warning("could not tell %s of held email %s: %s", admin, held.id, exc)
        return True

    async def decide(self, held_id: str, decision: Decision, user: Address) -> Notice:
        """An admin's decision on a held email, carried out once."""
        held = await self.held.get(held_id)
        if held is None:
            return Notice(f"No held email {held_id!r}: it was decided on more than "
                          f"a week ago, or the id is mistyped (see `status`).")
        verb = {Decision.POSTED: "post", Decision.DISCARDED: "discard",
                Decision.ALLOWED: "allow the sender of"}[decision]
        refused = await self.admins.refusal(user, Network(held.network), held.room,
                                            f"{verb} held mail")
        if refused is not None:
            return Notice(f"Not allowed: {refused}.")
        if decision is Decision.ALLOWED and not (held.route and held.sender):
            return Notice("There is no sender to allow here (the email came to an address "
                          "with no route, or had no From); post it or discard it.")
        decided = await self.held.decide(held_id, decision, user.value, time.time())
        if decided is None:
            return Notice(f"No held email {held_id!r}.")
        made, fresh = decided
        if not fresh:
            when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(made.decided_at))
            return Notice(f"Already decided: {made.decision} by {made.decided_by} at {when}.")
        what = await self._carry_out(made, decision, user)
        if what is None:
            return Notice(f"Could not post it: {held.reason}. It waits again; try later.")
        await self._record(user, held, decision)
        return Notice(what)

    async def _carry_out(self, held: HeldMail, decision: Decision, user: Address
                         ) -> str | None:
        if decision is Decision.DISCARDED:
            return f"Discarded the email from {held.sender} ({held.subject or 'no subject'})."
        try:
            if decision is Decision.ALLOWED:
                await self.routes.allow(held.route, Address.email(held.sender))
            raw = await self.held.raw(held.id)
            if raw is None or self.release is None:
                raise TransientFailure("its bytes are gone")
            posted = await self.release(held, raw)
        except (TransientFailure, StoreError, BridgeError) as exc:
            log.warning("held email %s could not be posted: %s", held.id, exc)
            await self.held.undo(held.id)
            return None
        allowed = (f" {held.sender} is allowed on {held.route} from now on."
                   if decision is Decision.ALLOWED else "")
        return f"{posted}{allowed}"

    async def _record(self, user: Address, held: HeldMail, decision: Decision) -> None:
        await record_or_log(self.audit, AuditEvent(
            AuditAction.HELD_DECIDED, str(user), f"{held.network}:{held.room}",
            f"{decision.value}: email {held.message_id[:200]} from {held.sender[:200]} "
            f"({held.reason[:200]})"))


def held_notice(held: HeldMail, *, allow: bool) -> Notice:
    choices = [Choice("post", "Post anyway", held.id, "held"),
               Choice("discard", "Discard", held.id, "held")]
    if allow:
        choices.append(Choice("allow", "Allow this sender", held.id, "held"))
    if held.sender:
        choices.append(Choice("block", "Block sender", held.id, "held"))
    return Notice(render("chat/held.txt.j2", held=held, place=place(held.network, held.room),
                         allow=allow), tuple(choices))
