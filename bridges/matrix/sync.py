"""The Matrix sync loop: the bot accepts invitations and hears `!sb` commands."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

import aiohttp
from nio import (
    AsyncClient,
    ErrorResponse,
    InviteMemberEvent,
    MatrixRoom,
    MegolmEvent,
    RoomMessageText,
    SyncError,
)

from bot.errors import StoreError
from bot.model import Address, ChatRef, Network
from bot.ports import Notice
from bridges.matrix.client import MatrixNetwork
from bridges.matrix.room_keys import MissingKeys

log = logging.getLogger(__name__)
T = TypeVar("T")
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


async def keep_keys(client: AsyncClient) -> None:
    """After each sync, what matrix-nio's own loop would do for encryption: send queued
    to-device messages (key shares, key requests), publish one-time keys, learn the
    devices of the people in encrypted rooms, and open sessions with new ones. Devices
    are trusted on first use; a new device of someone already known is logged."""
    if client.olm is None:
        return
    await client.send_to_device_messages()
    if client.should_upload_keys:
        await _checked(client.keys_upload(), "publishing the bot's one-time keys")
    if client.should_query_keys:
        await _checked(client.keys_query(), "asking for people's device keys")
        _trust_on_first_use(client)
    if client.should_claim_keys:
        await _checked(client.keys_claim(client.get_users_for_key_claiming()),
                       "opening encrypted sessions with new devices")


async def _checked(call: Awaitable[Any], what: str) -> None:
    answer = await call
    if isinstance(answer, ErrorResponse):
        log.warning("Matrix encryption: %s failed: %s", what, answer.message)


def _trust_on_first_use(client: AsyncClient) -> None:
    for user_id, devices in client.device_store.items():
        if user_id == client.user_id:
            continue
        known = [d for d in devices.values() if d.verified]
        for device in devices.values():
            if device.verified or device.blacklisted or device.deleted:
                continue
            if known:
                log.warning("Matrix: %s has a new device %s (key %s); trusted on first use. "
                            "If they did not add one, their account may be in other hands.",
                            user_id, device.id, device.ed25519)
            client.verify_device(device)


def _thread_root(content: dict[str, Any]) -> str:
    relates = content.get("m.relates_to") or {}
    if relates.get("rel_type") == "m.thread":
        return str(relates.get("event_id", ""))
    return str((relates.get("m.in_reply_to") or {}).get("event_id", ""))


async def sync_forever(matrix: MatrixNetwork, stop: asyncio.Event,
                       on_command: OnCommand | None = None,
                       may_invite: MayInvite | None = None,
                       first_unreadable: FirstTime | None = None) -> None:
    client = matrix.client

    async def on_unreadable(room: MatrixRoom, event: MegolmEvent) -> None:
        """An encrypted event the bot has no key for: ask the sender's devices for the
        key, and tell the sender (once) rather than drop their message silently."""
        if event.sender == client.user_id:
            return
        log.warning("cannot decrypt %s from %s in %s (session %s): key asked of the "
                    "sender's device", event.event_id, event.sender, room.room_id,
                    event.session_id)
        try:
            await missing.ask(room, event)
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            log.warning("the key request for %s was not sent: %s", event.event_id, exc)
        try:
            if first_unreadable is None or await first_unreadable(event.sender):
                await matrix.notify(Address.matrix(event.sender),
                                    Notice(f"{event.sender}: {UNREADABLE}"),
                                    ChatRef(Network.MATRIX, room.room_id, event.event_id,
                                            _thread_root(event.source.get("content", {}))))
        except Exception:
            log.exception("could not tell %s that their message was unreadable", event.sender)

    async def on_invite(room: MatrixRoom, event: InviteMemberEvent) -> None:
        if event.state_key != client.user_id or event.membership != "invite":
            return
        try:
            inviter = Address.matrix(event.sender)
            allowed = may_invite is None or await may_invite(inviter, room.room_id)
        except Exception:
            log.exception("the invitation to %s from %s could not be judged", room.room_id,
                          event.sender)
            return
        if not allowed:
            log.info("declining %s: %s may not invite the bot", room.room_id, event.sender)
            await client.room_leave(room.room_id)
            return
        log.info("joining %s on %s's invitation", room.room_id, event.sender)
        await client.join(room.room_id)

    async def on_message(room: MatrixRoom, event: RoomMessageText) -> None:
        body = event.body.strip()
        if event.sender == client.user_id or on_command is None:
            return
        root = _thread_root(event.source.get("content", {}))
        command = body == PREFIX or body.startswith(PREFIX + " ")
        if not command and not root:
            return
        where = ChatRef(Network.MATRIX, room.room_id, event.event_id, root)
        try:
            sender = Address.matrix(event.sender)
            text = body[len(PREFIX):].strip() if command else body
            notice = await on_command(CommandEvent(
                sender, room.user_name(event.sender) or event.sender, text, where,
                event.event_id, plain=not command))
            if notice is not None:
                await matrix.notify(sender, notice, where)
        except Exception:
            # The verb only: what follows it can be the text of an email.
            log.exception("the command %r from %s failed", body.split(" ", 2)[:2],
                          event.sender)

    client.add_event_callback(on_invite, InviteMemberEvent)
    # A message read once its key came is heard as if it had just been said.
    missing = MissingKeys(client, on_message)

    def hear() -> None:
        client.add_event_callback(on_message, RoomMessageText)
        if client.olm is not None:
            client.add_event_callback(on_unreadable, MegolmEvent)
    # Where the last handled batch ended: a restart (or a crash mid-batch) reads on from
    # there, so nothing said to the bot meanwhile is lost. nio would take the token of a
    # batch before its callbacks ran; ours is saved only after they all have.
    since = await matrix.state.sync_token(client.user_id)
    hearing = since is not None
    if hearing:
        hear()
    backoff = 1.0
    first = True
    while not stop.is_set():
        # A first sync with no saved token only learns where "now" is, not every room's
        # past; with one, it brings what came since (and the rooms' state, in full).
        limit = 50 if not first or since is not None else 1
        try:
            answer = await _until_stopped(
                client.sync(timeout=10_000 if not first else 0, full_state=first,
                            since=since,
                            sync_filter={"room": {"timeline": {"limit": limit},
                                                  "state": {"lazy_load_members": True}}}), stop)
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            # The homeserver is down or restarting (nio raises rather than answering).
            answer = SyncError(f"the homeserver is unreachable ({exc})")
        if answer is None:
            return
        if isinstance(answer, SyncError):
            log.warning("Matrix sync failed: %s; retrying in %.0f s", answer.message, backoff)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), backoff)
            backoff = min(30.0, backoff * 2)
            continue
        backoff = 1.0
        try:
            await keep_keys(client)
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            log.warning("Matrix encryption upkeep failed (%s); again after the next sync", exc)
        since = answer.next_batch
        try:
            await matrix.state.save_sync_token(client.user_id, since)
        except StoreError as exc:
            log.warning("the Matrix sync token was not saved (%s): a restart re-reads "
                        "this batch", exc)
        first = False
        if not hearing:
            # A first start: commands from before it are nobody's to answer now.
            hear()
            hearing = True


async def _until_stopped(work: Coroutine[Any, Any, T], stop: asyncio.Event) -> T | None:
    """The result of ``work``, or None if ``stop`` came first (the long poll is cut short)."""
    task = asyncio.ensure_future(work)
    stopped = asyncio.ensure_future(stop.wait())
    done, _ = await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
    stopped.cancel()
    if task in done:
        return task.result()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    return None
