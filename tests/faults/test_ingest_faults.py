"""Fault injection on the ingest path: the process SIGKILLed between posting and
checkpointing, the IMAP connection cut, Redis restarted mid-burst. Nothing lost,
nothing twice."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bot.settings import Settings
from storage.store import Store
from tests.bridge import SLACK_CHANNEL, bridge_env, prepare_chat, running_bridge
from tests.conftest import Services
from tests.mailhelp import MatrixUser, eventually, make_mail, send_mail
from tests.servers import redis_server, start_switchboard
from tests.slackapi.client import SlackControl

pytestmark = pytest.mark.integration

BIN = Path(sys.executable).parent


def subject_of_slack(message: dict[str, Any]) -> str:
    return str(message["blocks"][0]["text"]["text"].split("*Subject:* ")[1].split("\n")[0])


def subject_of_matrix(event: dict[str, Any]) -> str:
    return str(event["content"]["body"].split("Subject: ")[1].split("\n")[0])


async def chat_subjects(slack: SlackControl, alice: MatrixUser, room: str) -> Counter[str]:
    seen: Counter[str] = Counter()
    seen.update(subject_of_slack(m) for m in await slack.messages(SLACK_CHANNEL)
                if not m["files"])
    seen.update(subject_of_matrix(e) for e in await alice.messages(room)
                if e["content"].get("msgtype") == "m.text")
    return seen


async def test_killed_between_post_and_checkpoint_posts_nothing_twice(
        services: Services, slack: SlackControl, http: aiohttp.ClientSession,
        tmp_path: Path) -> None:
    room, alice = await prepare_chat(services, slack, http)
    prefix = f"test-{uuid.uuid4().hex[:12]}"
    env = bridge_env(services, slack, prefix, room)
    settings = Settings.load(env)
    store = Store.open(settings.redis_url, prefix)
    subjects = [f"kill {i:02d}" for i in range(40)]
    # Everything is in the mailbox before Switchboard starts, so it is read in one batch
    # and the checkpoint trails the posts for the whole batch.
    for i, subject in enumerate(subjects):
        to = services.email("support" if i % 2 else "sales")
        await send_mail(services, make_mail("alice@partner.test", to, subject, f"body {i}"))
    log = tmp_path / "switchboard.log"
    first = start_switchboard("run", env, log)
    try:
        killed_in_window = False
        for _ in range(400):
            await asyncio.sleep(0.02)
            posted = await store.redis.hlen(store.keys.posts())
            if posted < 6:
                continue
            os.kill(first.pid, signal.SIGSTOP)
            # Kill only where every post Slack made has been recorded by Switchboard:
            # between a post and the checkpoint, not inside Slack's answer.
            recorded = await store.redis.hvals(store.keys.posts())
            slack_recorded = sum('"slack"' in r for r in recorded)
            slack_made = len([m for m in await slack.messages(SLACK_CHANNEL)
                              if not m["files"]])
            checkpoints = [k async for k in store.redis.scan_iter(match=f"{prefix}:imap:*")]
            if slack_recorded == slack_made and not checkpoints:
                first.kill()
                killed_in_window = True
                break
            os.kill(first.pid, signal.SIGCONT)
        assert killed_in_window, "never caught the process between a post and its checkpoint"
        first.wait(timeout=10)
        posted_before = await store.redis.hlen(store.keys.posts())
        assert 0 < posted_before < len(subjects)

        second = start_switchboard("run", env, log)
        try:
            async def everything() -> Counter[str] | None:
                seen = await chat_subjects(slack, alice, room)
                return seen if len(seen) == len(subjects) else None

            seen = await eventually(everything, within=90, what="all 40 emails in chat")
            await asyncio.sleep(1.0)  # anything posted twice would show up by now
            seen = await chat_subjects(slack, alice, room)
            assert seen == Counter({s: 1 for s in subjects}), log.read_text()[-3000:]
        finally:
            second.terminate()
            second.wait(timeout=30)
    finally:
        if first.poll() is None:
            first.kill()
        keys = [k async for k in store.redis.scan_iter(match=f"{prefix}:*", count=1000)]
        if keys:
            await store.redis.delete(*keys)
        await store.close()


async def test_imap_connection_cut_then_resumed(services: Services, slack: SlackControl,
                                                http: aiohttp.ClientSession) -> None:
    async with running_bridge(services, slack, http) as bridge:
        ingest = bridge.runtime.ingests[0]
        conf = f"{services.env['SB_STATE_DIR']}/dovecot/dovecot.conf"
        kicked = await asyncio.create_subprocess_exec(
            "doveadm", "-c", conf, "kick", services.email("switchboard"),
            stdout=asyncio.subprocess.DEVNULL)
        assert await kicked.wait() == 0
        await eventually(lambda: _reconnected(ingest), what="the ingest to reconnect")
        await send_mail(services, make_mail("alice@partner.test", services.email("support"),
                                            "after the cut", "still here"))
        (post,) = await eventually(bridge.slack_posts, within=30, what="the post after the cut")
        assert "still here" in post["blocks"][1]["text"]["text"]


async def test_reconnect_backoff_starts_over_after_a_healthy_session(
        services: Services, slack: SlackControl, http: aiohttp.ClientSession) -> None:
    """Drops spread over a day each wait a second, not 1, 2, 4 … 30: a session that lived
    starts the backoff over."""
    async with running_bridge(services, slack, http) as bridge:
        ingest = bridge.runtime.ingests[0]
        ingest.healthy_after = 0.5  # a day of healthy sessions, shortened
        conf = f"{services.env['SB_STATE_DIR']}/dovecot/dovecot.conf"
        waits = []
        for cut in range(4):
            await eventually(lambda n=cut + 1: _reconnected(ingest, n), what="a live session")
            await asyncio.sleep(0.6)
            kicked = await asyncio.create_subprocess_exec(
                "doveadm", "-c", conf, "kick", services.email("switchboard"),
                stdout=asyncio.subprocess.DEVNULL)
            assert await kicked.wait() == 0
            await eventually(lambda: _cut(ingest), what="the cut to be seen")
            waits.append(ingest.backoff)
        assert waits == [1.0, 1.0, 1.0, 1.0]
        await eventually(lambda: _reconnected(ingest, 5), what="the ingest to reconnect")


async def _cut(ingest: Any) -> bool:
    return not ingest.connected


async def _reconnected(ingest: Any, sessions: int = 2) -> bool:
    return bool(ingest.sessions >= sessions and ingest.connected)


async def test_redis_restarted_mid_burst(services: Services, slack: SlackControl,
                                        http: aiohttp.ClientSession) -> None:
    """redis-server (AOF on) stopped while a burst is being bridged, started again."""
    subjects = [f"redis burst {i:02d} {uuid.uuid4().hex[:6]}" for i in range(16)]
    with redis_server(appendonly=True) as redis:
        async with running_bridge(services, slack, http,
                                  SWITCHBOARD_REDIS_URL=redis.url) as bridge:
            for subject in subjects:
                await send_mail(services, make_mail("alice@partner.test",
                                                    services.email("support"), subject, "x"))

            async def some() -> bool:
                return len(await bridge.slack_posts()) >= 3

            await eventually(some, what="the burst to start")
            redis.stop()
            await asyncio.sleep(2.0)
            redis.start()

            async def everything() -> list[str] | None:
                seen = [subject_of_slack(p) for p in await bridge.slack_posts()]
                return seen if len(set(seen)) == len(subjects) else None

            await eventually(everything, within=90, what="the whole burst after Redis is back")
            await asyncio.sleep(1.0)  # anything posted twice would show up by now
            seen = Counter(subject_of_slack(p) for p in await bridge.slack_posts())
            assert seen == Counter({s: 1 for s in subjects})
