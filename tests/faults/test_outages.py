"""Fault injection on the networks Switchboard depends on: the mail server stopped and
back, Synapse restarted mid-burst, Slack answering 500 and 429 for a while. After each,
every message is delivered exactly once and every delivery ends in a final state."""

from __future__ import annotations

import asyncio
import subprocess
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from bot.model import Carrier, DeliveryState
from tests.bridge import SLACK_PEOPLE, Bridge, running_bridge
from tests.conftest import Services
from tests.faults.test_ingest_faults import subject_of_matrix, subject_of_slack
from tests.integration.test_commands import matrix_runner
from tests.integration.test_reply_by_email import received, reply_by_email_from_slack
from tests.integration.test_reply_in_chat import (
    bob_told,
    email_card,
    slack_dm,
    start_worker,
    stop_worker,
)
from tests.mailhelp import clear_mailbox, eventually, mailbox, make_mail, send_mail
from tests.slackapi.client import SlackControl

pytestmark = pytest.mark.integration

BOB = SLACK_PEOPLE["bob"]
ROOT = Path(__file__).resolve().parents[2]


def service(action: str, name: str) -> None:
    subprocess.run(["bash", str(ROOT / "scripts/services.sh"), action, name], check=True,
                   timeout=120, stdout=subprocess.DEVNULL)


@pytest.fixture
async def bridge(services: Services, slack: SlackControl, http: aiohttp.ClientSession
                 ) -> AsyncIterator[Bridge]:
    await clear_mailbox(services, "alice")
    async with running_bridge(services, slack, http, SWITCHBOARD_RETRY_INTERVAL="1") as running:
        yield running


async def all_final(bridge: Bridge) -> None:
    counts = await bridge.runtime.store.deliveries.count_by_state()
    assert {s for s, n in counts.items() if n and not s.is_final} == set(), counts


async def test_mail_server_stopped_then_back(bridge: Bridge, tmp_path: Path) -> None:
    services = bridge.services
    alice = services.email("alice")
    subject = "Outage " + uuid.uuid4().hex[:8]
    card = await email_card(bridge, f"Alice <{alice}>", subject, "Send me the report?")
    worker = start_worker(bridge, tmp_path / "worker.log")
    service("stop", "postfix")
    try:
        await reply_by_email_from_slack(bridge, card, "Report attached.")
        await bob_told(bridge, "is queued and will be sent as soon as it is back")
        await asyncio.sleep(3)  # a few retries against the stopped server
    finally:
        service("restart", "postfix")
    try:
        await received(services, "alice", subject)

        async def bob_dm_told() -> bool:
            return any(f"Sent by email to {alice}" in str(m)
                       for m in await slack_dm(bridge, BOB))

        await eventually(bob_dm_told, what="Bob told in his DM that it went out")
        await asyncio.sleep(2)  # a second copy would arrive by now
        assert len([m for m in await mailbox(services, "alice") if subject.encode() in m]) == 1
    finally:
        stop_worker(worker)
    await all_final(bridge)
    (delivery,) = [d for d in await bridge.runtime.store.deliveries.in_state(
        DeliveryState.EMAILED) if d.context.carrier is Carrier.EMAIL]
    states = [c.state for c in delivery.changes]
    assert DeliveryState.QUEUED in states and states[-1] is DeliveryState.EMAILED


async def test_synapse_restarted_mid_burst(bridge: Bridge) -> None:
    services = bridge.services
    subjects = [f"synapse {i:02d} {uuid.uuid4().hex[:6]}" for i in range(10)]
    for subject in subjects[:5]:
        await send_mail(services, make_mail("alice@partner.test", services.email("sales"),
                                            subject, "x"))

    async def matrix_subjects() -> Counter[str]:
        return Counter(subject_of_matrix(e) for e in await bridge.room_posts())

    async def some() -> bool:
        return len(await matrix_subjects()) >= 1

    await eventually(some, what="the burst to start")
    service("stop", "synapse")
    for subject in subjects[5:]:
        await send_mail(services, make_mail("alice@partner.test", services.email("sales"),
                                            subject, "x"))
    await asyncio.sleep(2)
    service("restart", "synapse")

    async def everything() -> Counter[str] | None:
        seen = await matrix_subjects()
        return seen if set(subjects) <= set(seen) else None

    await eventually(everything, within=120, what="every email in the room after the restart")
    await asyncio.sleep(2)
    seen = await matrix_subjects()
    assert {s: seen[s] for s in subjects} == {s: 1 for s in subjects}
    # The sync loop lived through it: commands are still heard.
    assert "Switchboard commands" in await matrix_runner(bridge, bridge.alice)("help")


async def test_slack_answering_500_and_429_for_a_while(bridge: Bridge) -> None:
    services = bridge.services
    subjects = [f"slack outage {i:02d} {uuid.uuid4().hex[:6]}" for i in range(12)]
    await bridge.slack.fail("chat.postMessage", times=5, status=500)
    await bridge.slack.rate_limit("chat.postMessage", times=3, retry_after=1)
    for subject in subjects:
        await send_mail(services, make_mail("alice@partner.test", services.email("support"),
                                            subject, "x"))

    async def everything() -> list[str] | None:
        seen = [subject_of_slack(p) for p in await bridge.slack_posts()]
        return seen if set(subjects) <= set(seen) else None

    await eventually(everything, within=120, what="every email in Slack after the outage")
    await asyncio.sleep(1)
    seen = Counter(subject_of_slack(p) for p in await bridge.slack_posts())
    assert {s: seen[s] for s in subjects} == {s: 1 for s in subjects}
    state = await bridge.slack.state()  # every injected 500 and 429 was answered
    assert state["failures"]["chat.postMessage"][0] == 0
    assert state["rate_limits"]["chat.postMessage"][0] == 0
