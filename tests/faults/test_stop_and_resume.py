"""Stopping and restarting with work in hand: SIGTERM during an IMAP backlog with Slack
answering slowly, and SIGKILL in the instant between Slack acting and Switchboard hearing
so (the card, and a file of it). A restart posts nothing twice and loses nothing."""

from __future__ import annotations

import asyncio
import signal
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bot.settings import Settings
from storage.store import Store
from tests.bridge import SLACK_CHANNEL, bridge_env, prepare_chat
from tests.conftest import Services
from tests.faults.test_ingest_faults import subject_of_slack
from tests.mailhelp import eventually, make_mail, send_mail
from tests.servers import start_switchboard
from tests.slackapi.client import SlackControl

pytestmark = pytest.mark.integration


@asynccontextmanager
async def slack_only(services: Services, slack: SlackControl, http: aiohttp.ClientSession
                     ) -> AsyncIterator[tuple[dict[str, str], Store]]:
    room, _ = await prepare_chat(services, slack, http)
    prefix = f"test-{uuid.uuid4().hex[:12]}"
    env = bridge_env(services, slack, prefix, room)
    store = Store.open(Settings.load(env).redis_url, prefix)
    try:
        yield env, store
    finally:
        keys = [k async for k in store.redis.scan_iter(match=f"{prefix}:*", count=1000)]
        if keys:
            await store.redis.delete(*keys)
        await store.close()


async def cards(slack: SlackControl) -> list[dict[str, Any]]:
    return [m for m in await slack.messages(SLACK_CHANNEL) if not m["files"]]


async def test_sigterm_during_a_backlog_stops_at_once_and_repeats_nothing(
        services: Services, slack: SlackControl, http: aiohttp.ClientSession,
        tmp_path: Path) -> None:
    async with slack_only(services, slack, http) as (env, store):
        # Emails of different conversations go side by side: at most four in hand here,
        # so the stop has a backlog behind them to leave alone.
        env["SWITCHBOARD_INGEST_CONCURRENCY"] = "4"
        subjects = [f"term {i:02d} {uuid.uuid4().hex[:4]}" for i in range(20)]
        for i, subject in enumerate(subjects):
            await send_mail(services, make_mail("alice@partner.test",
                                                services.email("support"), subject, f"b{i}"))
        await slack.slow("chat.postMessage", 0.4, times=1000)
        log = tmp_path / "switchboard.log"
        first = start_switchboard("run", env, log)
        try:
            await eventually(lambda: _at_least(slack, 3), within=60, what="a few posts")
            first.send_signal(signal.SIGTERM)
            code = await asyncio.to_thread(first.wait, 60)
        finally:
            if first.poll() is None:
                first.kill()
        assert code == 0, log.read_text()[-2000:]
        made = len(await cards(slack))
        # It stopped taking mail at once: the backlog was not worked through first, and
        # what Slack showed is exactly what was recorded and checkpointed.
        assert made < len(subjects)
        assert await store.redis.hlen(store.keys.posts()) == made
        assert "Task was destroyed" not in log.read_text()
        await slack.slow("chat.postMessage", 0.0, times=0)
        second = start_switchboard("run", env, log)
        try:
            async def everything() -> bool:
                return len(await cards(slack)) >= len(subjects)

            await eventually(everything, within=90, what="the whole backlog after the restart")
            await asyncio.sleep(1.0)  # anything posted twice would show up by now
            seen = Counter(subject_of_slack(m) for m in await cards(slack))
            assert seen == Counter({s: 1 for s in subjects})
        finally:
            second.terminate()
            second.wait(timeout=30)


async def _at_least(slack: SlackControl, n: int) -> bool:
    return len(await cards(slack)) >= n


@pytest.mark.parametrize("cut", ["chat.postMessage", "files.completeUploadExternal"])
async def test_killed_between_slack_acting_and_the_record_posts_nothing_twice(
        services: Services, slack: SlackControl, http: aiohttp.ClientSession,
        tmp_path: Path, cut: str) -> None:
    """Slack carries the call out but answers late; the process is SIGKILLed in that
    window, so Redis never hears of the card (or of its first file)."""
    async with slack_only(services, slack, http) as (env, store):
        subject = f"cut {uuid.uuid4().hex[:6]}"
        await slack.slow(cut, 30.0, times=1, after=True)
        await send_mail(services, make_mail(
            "alice@partner.test", services.email("support"), subject, "two files",
            attachments=(("a.pdf", b"%PDF-1.4 first"), ("b.pdf", b"%PDF-1.4 second"))))
        log = tmp_path / "switchboard.log"
        first = start_switchboard("run", env, log)
        try:
            async def acted() -> bool:
                state = await slack.state()
                if cut == "chat.postMessage":
                    return bool(await cards(slack))
                return any(f.get("shared") for f in state["files"])

            await eventually(acted, within=60, what=f"Slack carrying out {cut}")
            first.kill()
            await asyncio.to_thread(first.wait, 30)
        finally:
            if first.poll() is None:
                first.kill()
        assert await store.redis.hlen(store.keys.posts()) == 0  # the record never happened
        second = start_switchboard("run", env, log)
        try:
            async def complete() -> bool:
                files = [m for m in await slack.messages(SLACK_CHANNEL) if m["files"]]
                return len(await cards(slack)) >= 1 and len(files) >= 2

            await eventually(complete, within=60, what="the card and both files")
            await asyncio.sleep(1.0)
            posted = await slack.messages(SLACK_CHANNEL)
            assert [subject_of_slack(m) for m in posted if not m["files"]] == [subject]
            names = sorted(f["name"] for m in posted for f in m["files"])
            assert names == ["a.pdf", "b.pdf"], names
        finally:
            second.terminate()
            second.wait(timeout=30)
