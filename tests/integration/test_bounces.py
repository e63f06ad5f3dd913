"""Bounces of Switchboard's own mail: the return path names the delivery (VERP, a token
Switchboard issued), the real Postfix bounces mail for a mailbox that does not exist,
and the delivery fails with the remote server's words, told to the replier once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from bot.model import DeliveryState
from tests.bridge import Bridge, running_bridge
from tests.conftest import Services
from tests.integration.test_reply_by_email import reply_by_email_from_slack
from tests.integration.test_reply_in_chat import BOB, bob_told, button, email_card
from tests.mailhelp import eventually
from tests.slackapi.client import SlackControl

pytestmark = pytest.mark.integration


@pytest.fixture
async def bridge(services: Services, slack: SlackControl, http: aiohttp.ClientSession
                 ) -> AsyncIterator[Bridge]:
    # The submission port accepts any recipient of its domains and bounces later, as a
    # provider's does: the bounce comes back as mail, not as an SMTP error.
    async with running_bridge(services, slack, http,
                              SWITCHBOARD_SMTP_PORT=services.env["SB_SUBMISSION_PORT"],
                              SWITCHBOARD_SMTP_USER=services.email("switchboard"),
                              SWITCHBOARD_SMTP_PASSWORD=services.password) as running:
        yield running


async def test_a_bounce_fails_the_delivery_and_tells_the_replier_once(bridge: Bridge) -> None:
    ghost = bridge.services.email("nobody-here")  # no such mailbox
    card = await email_card(bridge, f"Nobody <{ghost}>", "Bounce me")
    await reply_by_email_from_slack(bridge, card, "This will come back.")
    await bob_told(bridge, f"Sent by email to {ghost}")

    async def told() -> list[dict[str, Any]]:
        """Where Bob replied from (the card's thread), else his DM with the bot."""
        state = await bridge.slack.state()
        return [m for m in state["messages"] if "did not arrive" in str(m["blocks"])
                and (m["ephemeral_to"] == BOB or m["channel"] in
                     {c["id"] for c in state["channels"] if c["members"] == [BOB]})]

    (notice,) = await eventually(told, what="Bob told that the email bounced")
    text = str(notice["blocks"])
    assert ghost in text and "unknown user" in text  # the remote server's words

    cid, _, eid = button(card, "reply_by_email").partition("/")
    deliveries = await bridge.runtime.store.deliveries.in_state(DeliveryState.FAILED)
    (failed,) = [d for d in deliveries if d.conversation_id == cid]
    assert failed.changes[-1].note.startswith("bounced:")
    await asyncio.sleep(2)  # a second bounce (or a re-read) tells no one again
    assert len(await told()) == 1
    assert eid
