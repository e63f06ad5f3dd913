"""The Matrix sync loop keeps its own place: what is said to the bot while it is stopped
is heard when it starts again; a batch is marked read only after it was handled."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
import pytest

from bot.runtime.app import Runtime
from bot.settings import Settings
from storage.store import Store
from tests.bridge import bridge_env, prepare_chat, retire_room
from tests.conftest import Services
from tests.mailhelp import eventually
from tests.slackapi.client import SlackControl

pytestmark = pytest.mark.integration


@asynccontextmanager
async def serving(settings: Settings) -> AsyncIterator[Runtime]:
    runtime = await Runtime.start(settings)
    stop = asyncio.Event()
    task = asyncio.create_task(runtime.serve(stop))
    try:
        yield runtime
    finally:
        stop.set()
        await task
        await runtime.close()


async def test_a_command_sent_while_stopped_is_answered_after_the_restart(
        services: Services, slack: SlackControl, http: aiohttp.ClientSession) -> None:
    room, alice = await prepare_chat(services, slack, http)
    prefix = f"test-{uuid.uuid4().hex[:12]}"
    settings = Settings.load(bridge_env(services, slack, prefix, room,
                                        SWITCHBOARD_IMAP_HOST=""))
    bot = settings.matrix.user if settings.matrix else ""
    try:
        async with serving(settings) as first:
            async def placed() -> str | None:
                return await first.store.matrix.sync_token(bot)
            token = await eventually(placed, what="the sync loop's first saved place")
        # Stopped: alice asks for help meanwhile.
        sent = await alice.call("PUT", f"/rooms/{room}/send/m.room.message/c{uuid.uuid4().hex}",
                                {"msgtype": "m.text", "body": "!sb help"})
        async with serving(settings) as second:
            async def answered() -> str | None:
                seen = False
                for e in await alice.messages(room, 50):
                    if e["event_id"] == sent["event_id"]:
                        seen = True
                    elif seen and e["sender"] == bot and \
                            e["content"].get("msgtype") == "m.notice":
                        return str(e["content"]["body"])
                return None
            help_text = await eventually(answered, what="the answer to the command sent "
                                                        "while the bot was stopped")
            assert "Switchboard commands" in help_text

            async def moved_on() -> bool:  # saved once the batch it came in is handled
                return await second.store.matrix.sync_token(bot) != token

            await eventually(moved_on, what="the sync loop's place saved past the command")
    finally:
        store = Store.open(settings.redis_url, prefix)
        keys = [k async for k in store.redis.scan_iter(match=f"{prefix}:*", count=1000)]
        if keys:
            await store.redis.delete(*keys)
        await store.close()
        await retire_room(services, http, room, alice)
