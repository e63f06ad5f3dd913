"""Redis as organisations run it (a primary, a replica, three sentinels) and the primary
SIGKILLed in the middle of a burst: 200 emails through the SMTP listeners of two
`switchboard run` processes and over IMAP, with two workers holding queued deliveries.
Every email is posted once, every delivery delivered once, no process exits; and the same
after a second failover, back to the first node."""

from __future__ import annotations

import asyncio
import os
import signal
import smtplib
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis

from bot.model import DeliveryState
from tests.bridge import SLACK_CHANNEL, SLACK_PEOPLE, Bridge, other_run, running_bridge
from tests.conftest import SERVICES, Services
from tests.integration.test_reply_in_chat import (
    queued_while_away,
    slack_dm,
    start_worker,
    stop_worker,
)
from tests.mailhelp import eventually, make_mail, send_mail
from tests.slackapi.client import SlackControl

pytestmark = pytest.mark.integration


def sentinels(services: Services) -> list[tuple[str, int]]:
    return [(h, int(p)) for h, _, p in
            (s.rpartition(":") for s in services.env["SB_SENTINELS"].split(","))]


async def primary(services: Services) -> int:
    """The port of the node the sentinels name the primary now."""
    host, port = sentinels(services)[0]
    client = aioredis.Redis(host=host, port=port, decode_responses=True)
    try:
        found = await client.execute_command(  # type: ignore[no-untyped-call]
            "SENTINEL", "get-master-addr-by-name", services.env["SB_SENTINEL_MASTER"])
        return int(found[1])
    finally:
        await client.aclose()


async def healthy(services: Services) -> int:
    """Every node running (`services.sh up` starts the one a test killed; Sentinel makes
    it the new primary's replica), the replica in sync: the primary's port."""
    await asyncio.to_thread(subprocess.run, ["bash", str(SERVICES), "up"], check=True,
                            capture_output=True)

    async def synced() -> int | None:
        port = await primary(services)
        client = aioredis.Redis(port=port, decode_responses=True)
        try:
            info = await client.info("replication")
        finally:
            await client.aclose()
        online = [v for k, v in info.items() if k.startswith("slave")
                  and isinstance(v, dict) and v.get("state") == "online"]
        return port if info.get("role") == "master" and online else None

    return await eventually(synced, within=60, what="the Sentinel set whole again")


def kill_node(services: Services, port: int) -> None:
    pid = int((Path(services.env["SB_SENTINEL_DIR"]) / f"node-{port}.pid").read_text())
    os.kill(pid, signal.SIGKILL)


@pytest.fixture
async def bridge(services: Services, slack: SlackControl, http: aiohttp.ClientSession
                 ) -> AsyncIterator[Bridge]:
    await healthy(services)
    await slack.limits(False)  # capacity through a failover, not Slack's pace
    async with running_bridge(
            services, slack, http, SWITCHBOARD_REDIS_SENTINELS=services.env["SB_SENTINELS"],
            SWITCHBOARD_REDIS_SENTINEL_MASTER=services.env["SB_SENTINEL_MASTER"],
            SWITCHBOARD_REDIS_URL="redis://sentinel/0",
            SWITCHBOARD_SENDER_RATE="10000/60", SWITCHBOARD_CONVERSATION_RATE="10000/60",
            # Capacity, not Slack's pace (the local Slack's limits are off here).
            SWITCHBOARD_SLACK_POST_INTERVAL="0",
            SWITCHBOARD_RETRY_INTERVAL="1", SWITCHBOARD_RETRY_DEADLINE="3600") as running:
        yield running


def submit(port: int, mail: EmailMessage) -> int:
    """As a sending server does: a 4xx answer is tried again (here after a second, where a
    real one waits minutes); the number of tries."""
    for tries in range(1, 120):
        try:
            with smtplib.SMTP("127.0.0.1", port, timeout=60) as smtp:
                smtp.send_message(mail)
            return tries
        except (smtplib.SMTPResponseException, smtplib.SMTPRecipientsRefused,
                smtplib.SMTPServerDisconnected, ConnectionError) as exc:
            code = getattr(exc, "smtp_code", 451)
            if isinstance(exc, smtplib.SMTPRecipientsRefused):
                code = next(iter(exc.recipients.values()))[0]
            assert 400 <= int(code) < 500, f"refused for good: {exc}"
            time.sleep(1.0)
    raise AssertionError(f"{mail['Subject']} never accepted")


async def failover_during_burst(bridge: Bridge, http: aiohttp.ClientSession, tmp_path: Path,
                                round_: str) -> None:
    services, slack = bridge.services, bridge.slack
    tag = f"fo{round_}-{uuid.uuid4().hex[:6]}"
    logs = tmp_path / f"round-{round_}"
    logs.mkdir()
    workers = [start_worker(bridge, logs / f"worker{i}.log") for i in range(2)]
    try:
        async with other_run(bridge.env, logs / "run2.log", http) as second:
            # Two replies wait for Alice, away on Slack, in the workers' retries.
            before = 2 * (int(round_) - 1)  # the notices of the rounds before
            queued = [await queued_while_away(bridge, f"{tag} away {i}", f"{tag} reply {i}",
                                              earlier=before + i) for i in range(2)]
            assert len(set(queued)) == 2
            mails = [make_mail(services.email("dave"), services.email("support"),
                               f"{tag} {i:03d}", f"message {i}") for i in range(200)]
            old = await primary(services)
            listeners = [bridge.listener_port, second.listener]
            smtp_part, imap_part = mails[:140], mails[140:]

            async def over_imap() -> None:
                for mail in imap_part:  # into the bot's mailbox, through Postfix
                    await send_mail(services, mail)

            with ThreadPoolExecutor(max_workers=20) as pool:
                loop = asyncio.get_running_loop()
                sending = [loop.run_in_executor(pool, submit, listeners[i % 2], mail)
                           for i, mail in enumerate(smtp_part)]
                imap = asyncio.create_task(over_imap())

                async def some_posted() -> bool:
                    return len(await posted(slack, tag)) >= 40

                await eventually(some_posted, within=120, what="the burst under way")
                kill_node(services, old)  # mid-burst: SIGKILL, as a lost host
                killed = time.monotonic()
                await asyncio.gather(*sending, imap)
                print(f"round {round_}: all submitted {time.monotonic() - killed:.1f} s "
                      "after the kill")

            async def failed_over() -> bool:
                return await primary(services) != old

            await eventually(failed_over, within=60, what="the sentinels' failover")
            await slack.set_presence(SLACK_PEOPLE["alice"], "active")

            async def all_posted() -> list[dict[str, Any]] | None:
                found = await posted(slack, tag)
                return found if len({_subject(m, tag) for m in found}) >= 200 else None

            try:
                await eventually(all_posted, within=240, what="all 200 emails posted")
            except AssertionError:
                seen = {_subject(m, tag) for m in await posted(slack, tag)}
                missing = sorted(f"{tag} {i:03d}" for i in range(200)
                                 if f"{tag} {i:03d}" not in seen)
                raise AssertionError(f"not posted (0-139 by the listeners, 140- over IMAP):"
                                     f" {missing}") from None

            async def delivered() -> bool:
                store = bridge.runtime.store
                states = [await store.deliveries.get(d) for d in queued]
                return all(d is not None and d.state is DeliveryState.DELIVERED
                           for d in states)

            await eventually(delivered, within=120, what="the queued replies delivered")
            print(f"round {round_}: posted and delivered {time.monotonic() - killed:.1f} s "
                  "after the kill")
            await asyncio.sleep(2.0)  # anything doubled would show by now
            found = await posted(slack, tag)
            counts = Counter(_subject(m, tag) for m in found)
            assert counts == Counter({f"{tag} {i:03d}": 1 for i in range(200)}), \
                {s: n for s, n in counts.items() if n != 1 or not s.startswith(f"{tag} ")}
            dms = [m for m in await slack_dm(bridge, SLACK_PEOPLE["alice"])
                   if tag in str(m.get("blocks"))]
            assert sorted(_reply(m, tag) for m in dms) == [f"{tag} reply {i}" for i in range(2)], \
                [(m["channel"], m.get("text")) for m in await slack.messages()
                 if f"{tag} reply" in str(m.get("blocks"))]
            assert second.process.poll() is None, second.output()[-2000:]
            for worker in workers:
                assert worker.poll() is None, "a worker exited through the failover"
            assert bridge.serving is not None and not bridge.serving.done()
    finally:
        for worker in workers:
            stop_worker(worker)
        await bridge.slack.set_presence(SLACK_PEOPLE["alice"], "away")


async def posted(slack: SlackControl, tag: str) -> list[dict[str, Any]]:
    """The burst's cards in the channel (not the replies' cards, not notices to Bob)."""
    return [m for m in await slack.messages(SLACK_CHANNEL)
            if str(m.get("text", "")).startswith("Email from ") and f": {tag} " in m["text"]
            and not m.get("ephemeral_to") and not m.get("files")
            and " away " not in m["text"]]


def _subject(message: dict[str, Any], tag: str) -> str:
    return str(message["text"]).rpartition(": ")[2]


def _reply(message: dict[str, Any], tag: str) -> str:
    text = str(message.get("blocks"))
    start = text.index(f"{tag} reply ")
    return text[start:start + len(tag) + 8]


@pytest.mark.timeout(900)
async def test_a_primary_killed_mid_burst_loses_and_doubles_nothing(
        bridge: Bridge, http: aiohttp.ClientSession, tmp_path: Path) -> None:
    await failover_during_burst(bridge, http, tmp_path, "1")
    await healthy(bridge.services)  # the killed node back, as the new primary's replica
    await failover_during_burst(bridge, http, tmp_path, "2")
