"""Two Switchboards that mail each other must not loop: A reads the switchboard
mailbox, B reads dave's; a mail from B's address makes A answer automatically (a
bounce), and B must not answer that."""

from __future__ import annotations

import asyncio
import email
import uuid
from typing import Any

import aiohttp
import pytest

from tests.bridge import running_bridge
from tests.conftest import Services
from tests.mailhelp import clear_mailbox, eventually, mailbox, make_mail, send_mail
from tests.slackapi.client import SlackControl

pytestmark = pytest.mark.integration


async def test_a_loop_between_two_switchboard_mailboxes_stops_after_one_hop(
        services: Services, slack: SlackControl, http: aiohttp.ClientSession) -> None:
    b_address = services.email("dave")
    await clear_mailbox(services, "dave")
    async with running_bridge(services, slack, http) as a, running_bridge(
            services, slack, http, SWITCHBOARD_IMAP_USER=b_address,
            SWITCHBOARD_BOT_EMAIL=b_address) as b:
        subject = "Loop " + uuid.uuid4().hex
        # From B's address to a reply address A never gave out: A bounces it to B.
        start = make_mail(b_address, f"reply+{'a' * 26}@{services.env['SB_MAIL_DOMAIN']}",
                          subject, "Does this go round and round?")
        await send_mail(services, start)

        async def refused_by_b() -> str | None:
            return next((r.reason for r in await b.runtime.store.ingest.refusals()
                         if subject in r.subject), None)

        reason = await eventually(refused_by_b, what="B to receive A's bounce and refuse it")
        assert "automatic" in reason
        await asyncio.sleep(3)  # time for a second hop, were there one

        at_b = [email.message_from_bytes(m) for m in await mailbox(services, "dave")]
        assert len(at_b) == 1 and at_b[0]["Auto-Submitted"] == "auto-replied"
        a_refusals = [r for r in await a.runtime.store.ingest.refusals() if subject in r.subject]
        assert len(a_refusals) == 1  # A saw the first mail only: B answered nothing
        assert not [p for p in await a.slack_posts() if subject in str(p)]


async def test_a_conversation_takes_only_so_many_emails_per_window(
        services: Services, slack: SlackControl, http: aiohttp.ClientSession) -> None:
    async with running_bridge(services, slack, http,
                              SWITCHBOARD_CONVERSATION_RATE="3/3600") as bridge:
        subject = "Chatty " + uuid.uuid4().hex
        first = make_mail("carol@partner.test", services.email("support"), subject, "one")
        await send_mail(services, first)

        async def cards() -> list[object]:
            return [p for p in await bridge.slack_posts() if subject in str(p)]

        await eventually(cards, what="the first card")
        for n in range(4):  # an out-of-office answering itself, say
            await send_mail(services, make_mail("carol@partner.test", services.email("support"),
                                                f"Re: {subject}", f"again {n}",
                                                in_reply_to=str(first["Message-ID"])))

        async def held() -> list[str] | None:
            # Over the rate, they wait for the channel's admins (the route's room).
            found = [h.reason for h in await bridge.runtime.store.held.waiting()
                     if subject in h.subject]
            return found if len(found) == 2 else None

        reasons = await eventually(held, what="two answers over the limit held")
        assert all("in this conversation" in r for r in reasons)
        posted: list[dict[str, Any]] = await cards()  # type: ignore[assignment]
        root = next(p for p in posted if not p.get("thread_ts"))
        # The first card and two answers in its thread: three in the window.
        assert len(posted) == 3
        assert sorted(p.get("thread_ts") or "" for p in posted) == ["", root["ts"], root["ts"]]
