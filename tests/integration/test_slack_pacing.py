"""Slack paced as Slack allows, with its documented limits switched on in the local Slack
(about one post a second per channel, short bursts; 429 with Retry-After past them): a
burst of mail through the SMTP listener waits its channel's turn instead of meeting 429s
or being handed back with 451, is posted once, in order within each conversation, and
one busy channel does not hold up the others."""

from __future__ import annotations

import asyncio
import smtplib
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from email.message import EmailMessage
from typing import Any

import aiohttp
import pytest

from tests.bridge import SLACK_CHANNEL, SLACK_PEOPLE, Bridge, running_bridge
from tests.conftest import Services
from tests.mailhelp import eventually, make_mail
from tests.slackapi.client import SlackControl

pytestmark = pytest.mark.integration

CHANNELS = [f"C0PACE000{i}" for i in range(6)]


@pytest.fixture
async def bridge(services: Services, slack: SlackControl, http: aiohttp.ClientSession
                 ) -> AsyncIterator[Bridge]:
    for channel in CHANNELS:
        await slack.add_channel(channel, channel.lower(), list(SLACK_PEOPLE.values()))
    routes = ",".join([f"{services.email('support')}=slack:{SLACK_CHANNEL}"]
                      + [f"{services.email(f'desk{i}')}=slack:{c}"
                         for i, c in enumerate(CHANNELS)])
    async with running_bridge(services, slack, http, SWITCHBOARD_ROUTES=routes,
                              SWITCHBOARD_SENDER_RATE="1000/60",
                              SWITCHBOARD_CONVERSATION_RATE="1000/60") as running:
        await slack.limits(True)
        yield running


def burst(port: int, mails: list[EmailMessage]) -> list[str]:
    """Every email submitted at once, each in its own SMTP session; the server's answers."""
    def one(mail: EmailMessage) -> str:
        try:
            with smtplib.SMTP("127.0.0.1", port, timeout=300) as smtp:
                smtp.send_message(mail)
            return "250"
        except smtplib.SMTPResponseException as exc:
            return str(exc.smtp_code)
        except smtplib.SMTPRecipientsRefused as exc:
            return str(next(iter(exc.recipients.values()))[0])

    with ThreadPoolExecutor(max_workers=len(mails)) as pool:
        return list(pool.map(one, mails))


def conversation_mails(sender: str, to: list[str], count: int, tag: str) -> list[EmailMessage]:
    """``count`` emails: pairs of a question and its follow-up (In-Reply-To), so that
    order within a conversation can be checked."""
    mails = []
    for i in range(count // 2):
        first = make_mail(sender, to[i % len(to)], f"{tag} {i:02d} question", "first")
        second = make_mail(sender, to[i % len(to)], f"Re: {tag} {i:02d} question",
                           "second")
        second["In-Reply-To"] = first["Message-ID"]
        second["References"] = first["Message-ID"]
        mails += [first, second]
    return mails


async def posted(slack: SlackControl, channels: list[str], tag: str) -> list[dict[str, Any]]:
    found = []
    for channel in channels:
        found += [m for m in await slack.messages(channel)
                  if tag in str(m.get("blocks")) and not m.get("files")]
    return found


async def check_burst(bridge: Bridge, to: list[str], channels: list[str]) -> None:
    slack, services = bridge.slack, bridge.services
    tag = f"pace-{uuid.uuid4().hex[:6]}"
    mails = conversation_mails(services.email("alice"), to, 60, tag)
    before = len(await slack.throttled())
    # The questions at once, then their follow-ups at once (a reply is written after the
    # email it answers arrived: the sender's own server has just accepted it).
    answers = await asyncio.to_thread(burst, bridge.listener_port, mails[0::2])
    answers += await asyncio.to_thread(burst, bridge.listener_port, mails[1::2])
    assert Counter(answers) == Counter({"250": 60})  # accepted, none handed back

    async def all_posted() -> list[dict[str, Any]] | None:
        found = await posted(slack, channels, tag)
        return found if len(found) >= 60 else None

    found = await eventually(all_posted, within=120, what="all 60 emails in chat")
    await asyncio.sleep(1.0)
    found = await posted(slack, channels, tag)
    subjects = Counter(next(t for t in str(m["blocks"]).split("'") if tag in t)
                       for m in found)
    assert len(found) == 60 and all(n == 1 for n in subjects.values()), subjects
    for i in range(30):  # each follow-up after its question, in its thread
        question = next(m for m in found if f"{tag} {i:02d} question" in str(m["blocks"])
                        and "Re: " not in str(m["blocks"]))
        answer = next(m for m in found if f"Re: {tag} {i:02d} question" in str(m["blocks"]))
        assert float(answer["ts"]) > float(question["ts"])
        assert answer.get("thread_ts") == question["ts"]
    throttled = [t for t in (await slack.throttled())[before:] if t[0] == "chat.postMessage"]
    assert len(throttled) <= len(channels), throttled  # at most a burst's edge per channel


async def test_sixty_emails_into_one_channel_wait_their_turn(bridge: Bridge) -> None:
    await check_burst(bridge, [bridge.services.email("support")], [SLACK_CHANNEL])


async def test_sixty_emails_over_six_channels(bridge: Bridge) -> None:
    await check_burst(bridge, [bridge.services.email(f"desk{i}") for i in range(6)],
                      CHANNELS)
