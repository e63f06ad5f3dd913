"""The Matrix sync loop: the bot accepts invitations to rooms and direct chats."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine
from typing import Any, TypeVar

from nio import InviteMemberEvent, MatrixRoom, SyncError

from bridges.matrix.client import MatrixNetwork

log = logging.getLogger(__name__)
T = TypeVar("T")


async def sync_forever(matrix: MatrixNetwork, stop: asyncio.Event) -> None:
    client = matrix.client

    async def on_invite(room: MatrixRoom, event: InviteMemberEvent) -> None:
        if event.state_key == client.user_id and event.membership == "invite":
            log.info("joining %s on %s's invitation", room.room_id, event.sender)
            await client.join(room.room_id)

    client.add_event_callback(on_invite, InviteMemberEvent)
    backoff = 1.0
    while not stop.is_set():
        answer = await _until_stopped(
            client.sync(timeout=10_000, full_state=client.next_batch is None), stop)
        if answer is None:
            return
        if isinstance(answer, SyncError):
            log.warning("Matrix sync failed: %s; retrying in %.0f s", answer.message, backoff)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), backoff)
            backoff = min(30.0, backoff * 2)
        else:
            backoff = 1.0


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
