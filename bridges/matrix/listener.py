"""What the bot hears on Matrix, wherever it comes from (its sync loop, or the
homeserver's pushes to the application service): invitations, `!sb` commands, replies in
threads, and encrypted messages it cannot read yet."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
from nio import MatrixRoom, MegolmEvent, RoomMessageText

from bot.model import Address, ChatRef, Network
from bot.ports import Notice
from bridges.matrix.client import MatrixNetwork
from bridges.matrix.room_keys import MissingKeys

log = logging.getLogger(__name__)
PREFIX = "!sb"


@dataclass(frozen=True)
class CommandEvent:
    sender: Address
    sender_name: str
    text: str  # after the "!sb" prefix
    where: ChatRef  # the room, and the thread root when typed in a thread
    event_id: str
    plain: bool = False  # a message in a thread without the prefix


OnCommand = Callable[[CommandEvent], Awaitable[Notice | None]]
MayInvite = Callable[[Address, str], Awaitable[bool]]
# Whether to tell ``sender`` now that the bot could not read their message (once each).
FirstTime = Callable[[str], Awaitable[bool]]

UNREADABLE = ("Switchboard could not read your encrypted message: it does not have the "
              "room's key for it yet. It asked your device for the key, and acts on your "
              "message as soon as the key comes. If nothing happens, send it again; if this "
              "keeps happening, let your client share keys with unverified devices (in "
              "Element: Settings > Security & Privacy, turn off 'Never send encrypted "
              "messages to unverified sessions'), or verify the bot's device.")


def thread_root(content: dict[str, Any]) -> str:
    relates = content.get("m.relates_to") or {}
    if relates.get("rel_type") == "m.thread":
        return str(relates.get("event_id", ""))
    return str((relates.get("m.in_reply_to") or {}).get("event_id", ""))


class Listener:
    """The bot's answers to what it hears; ``missing`` asks for the keys of encrypted
    messages and hears them again once they come."""

    def __init__(self, matrix: MatrixNetwork, on_command: OnCommand | None = None,
                 may_invite: MayInvite | None = None,
                 first_unreadable: FirstTime | None = None) -> None:
        self.matrix = matrix
        self.on_command = on_command
        self.may_invite = may_invite
        self.first_unreadable = first_unreadable
        self.missing = MissingKeys(matrix.client, self._heard_later)

    async def invited(self, room: str, inviter: str) -> None:
        client = self.matrix.client
        try:
            allowed = self.may_invite is None or await self.may_invite(
                Address.matrix(inviter), room)
        except Exception:
            log.exception("the invitation to %s from %s could not be judged", room, inviter)
            return
        if not allowed:
            log.info("declining %s: %s may not invite the bot", room, inviter)
            await client.room_leave(room)
            return
        log.info("joining %s on %s's invitation", room, inviter)
        await client.join(room)

    def heeds(self, event: RoomMessageText) -> bool:
        """Whether the message is for the bot: a command, or a person's reply in a thread."""
        body = event.body.strip()
        if self.matrix.is_ours(event.sender) or self.on_command is None:
            return False
        return body == PREFIX or body.startswith(PREFIX + " ") or \
            bool(thread_root(event.source.get("content", {})))

    async def said(self, room: str, sender_name: str, event: RoomMessageText) -> None:
        """A message in ``room``: a command, a reply in a thread, or nothing for the bot."""
        if not self.heeds(event) or self.on_command is None:
            return
        body = event.body.strip()
        root = thread_root(event.source.get("content", {}))
        command = body == PREFIX or body.startswith(PREFIX + " ")
        where = ChatRef(Network.MATRIX, room, event.event_id, root)
        try:
            sender = Address.matrix(event.sender)
            text = body[len(PREFIX):].strip() if command else body
            notice = await self.on_command(CommandEvent(
                sender, sender_name or event.sender, text, where, event.event_id,
                plain=not command))
            if notice is not None:
                await self.matrix.notify(sender, notice, where)
        except Exception:
            # The verb only: what follows it can be the text of an email.
            log.exception("the command %r from %s failed", body.split(" ", 2)[:2],
                          event.sender)

    async def _heard_later(self, room: MatrixRoom, event: RoomMessageText) -> None:
        await self.said(room.room_id, room.user_name(event.sender) or event.sender, event)

    async def unreadable(self, room: MatrixRoom, event: MegolmEvent) -> None:
        """An encrypted event the bot has no key for: ask the sender's devices for the
        key, and tell the sender (once) rather than drop their message silently."""
        if event.sender == self.matrix.client.user_id:
            return
        log.warning("cannot decrypt %s from %s in %s (session %s): key asked of the "
                    "sender's device", event.event_id, event.sender, room.room_id,
                    event.session_id)
        try:
            await self.missing.ask(room, event)
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            log.warning("the key request for %s was not sent: %s", event.event_id, exc)
        try:
            if self.first_unreadable is None or await self.first_unreadable(event.sender):
                await self.matrix.notify(
                    Address.matrix(event.sender), Notice(f"{event.sender}: {UNREADABLE}"),
                    ChatRef(Network.MATRIX, room.room_id, event.event_id,
                            thread_root(event.source.get("content", {}))))
        except Exception:
            log.exception("could not tell %s that their message was unreadable", event.sender)
