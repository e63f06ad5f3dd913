"""The Matrix sync loop: the bot accepts invitations and hears `!sb` commands (see
bridges/matrix/listener.py), and keeps its encryption keys."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Coroutine
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
from bridges.matrix.client import MatrixNetwork
from bridges.matrix.listener import Listener

log = logging.getLogger(__name__)
T = TypeVar("T")


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


async def sync_forever(matrix: MatrixNetwork, stop: asyncio.Event, listener: Listener
                       ) -> None:
    """The bot's sync (bot-account mode: an application service is pushed its events)."""
    client = matrix.client

    async def on_invite(room: MatrixRoom, event: InviteMemberEvent) -> None:
        if event.state_key == client.user_id and event.membership == "invite":
            await listener.invited(room.room_id, event.sender)

    async def on_message(room: MatrixRoom, event: RoomMessageText) -> None:
        await listener.said(room.room_id, room.user_name(event.sender) or event.sender, event)

    client.add_event_callback(on_invite, InviteMemberEvent)

    def hear() -> None:
        client.add_event_callback(on_message, RoomMessageText)
        if client.olm is not None:
            client.add_event_callback(listener.unreadable, MegolmEvent)
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
