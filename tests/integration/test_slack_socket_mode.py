"""Slack over Socket Mode: the same replies and commands, through the websocket Switchboard
opens to the local Slack (no HTTP endpoint of ours is reached), across the disconnects and
re-deliveries Slack's Socket Mode has."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from bot.model import Address
from tests.bridge import SLACK_CHANNEL, SLACK_PEOPLE, Bridge, running_bridge
from tests.conftest import Services
from tests.integration.test_reply_by_email import answer, received, reply_by_email_from_slack
from tests.integration.test_reply_in_chat import (
    bob_told,
    email_card,
    reply_from_slack,
    sender,
    slack_dm,
)
from tests.mailhelp import clear_mailbox, eventually, send_mail
from tests.slackapi.apps import AppCredentials
from tests.slackapi.client import SlackControl, SocketSender

pytestmark = pytest.mark.integration

BOB = SLACK_PEOPLE["bob"]


async def connected(slack: SlackControl) -> bool:
    return int((await slack.socket())["connections"]) > 0


@pytest.fixture
async def bridge(services: Services, slack: SlackControl, http: aiohttp.ClientSession
                 ) -> AsyncIterator[Bridge]:
    await clear_mailbox(services, "alice")  # an earlier run's email would be found first
    async with running_bridge(services, slack, http,
                              SWITCHBOARD_SLACK_APP_TOKEN=AppCredentials().app_token,
                              SWITCHBOARD_SLACK_PING_INTERVAL="1") as running:
        await eventually(lambda: connected(slack), what="the Socket Mode connection")
        yield running


async def test_socket_mode_needs_no_endpoint_of_ours(bridge: Bridge,
                                                     http: aiohttp.ClientSession) -> None:
    port = bridge.settings.http_listen[1]
    async with http.post(f"http://127.0.0.1:{port}/slack/events", data=b"{}") as r:
        assert r.status == 404  # nothing listens for Slack over HTTP
    assert isinstance(sender(bridge), SocketSender)
    async with http.get(f"http://127.0.0.1:{port}/readyz") as r:
        assert (await r.json())["checks"]["slack_socket"] is True


async def test_reply_in_chat_over_socket_mode(bridge: Bridge) -> None:
    alice = Address.email(bridge.services.email("alice"))
    await bridge.slack.add_user(SLACK_PEOPLE["alice"], "alice", alice.value, "active")
    card = await email_card(bridge, f"Alice <{alice.value}>", "Socket numbers")
    await reply_from_slack(bridge, card, "Over the socket, Alice.")
    (dm,) = await eventually(lambda: slack_dm(bridge, SLACK_PEOPLE["alice"]), what="Alice's DM")
    assert "Over the socket, Alice." in str(dm["blocks"])
    assert "Can you check the numbers?" in str(dm["blocks"])  # with the history
    await bob_told(bridge, "reached alice")
    delivered = (await bridge.slack.socket())["delivered"]
    assert len(delivered) >= 2  # the button and the modal came as envelopes


async def test_reply_by_email_over_socket_mode(bridge: Bridge) -> None:
    services = bridge.services
    alice = services.email("alice")
    card = await email_card(bridge, f"Alice <{alice}>", "Socket budget", "How much?")
    await reply_by_email_from_slack(bridge, card, "Forty, over the socket.")
    sent = await received(services, "alice", "Socket budget")
    await send_mail(services, answer(sent, alice, "Thanks, socket Bob!"))

    async def in_thread() -> list[dict[str, Any]]:
        return [m for m in await bridge.slack_posts()
                if m.get("thread_ts") == card["ts"] and "Thanks, socket Bob!" in str(m["blocks"])]

    await eventually(in_thread, what="the email answer in the Slack thread")


async def test_an_empty_modal_is_refused_in_the_ack(bridge: Bridge) -> None:
    """An ack can carry an answer (accepts_response_payload): the modal's error."""
    card = await email_card(bridge, bridge.services.email("carol"), "Socket empty")
    slack = sender(bridge)
    value = next(e["value"] for b in card["blocks"] if b["type"] == "actions"
                 for e in b["elements"] if e["action_id"] == "reply_in_chat")
    await slack.block_action(BOB, "bob", SLACK_CHANNEL, card, "reply_in_chat", value)
    views = await eventually(lambda: _views(bridge), what="the reply modal")
    status, body = await slack.view_submission(BOB, "bob", views[-1], {"reply": {"text": " "}})
    assert status == 200 and '"response_action": "errors"' in body


async def _views(bridge: Bridge) -> list[dict[str, Any]]:
    return list((await bridge.slack.state())["views"])


async def _responses(slack: SlackControl) -> list[dict[str, Any]]:
    return list((await slack.state())["responses"])


async def test_a_disconnect_mid_burst_loses_and_doubles_nothing(bridge: Bridge) -> None:
    """Twenty slash commands at once; Slack asks for a refresh in the middle of them, and
    the acks of three are lost with the connection they went out on, so Slack delivers
    those again on the next one. Every command is answered, and answered once."""
    slack = bridge.slack
    talk = sender(bridge)
    await slack.lose_acks(3)
    burst = [asyncio.create_task(talk.slash_command(BOB, "bob", SLACK_CHANNEL, "help"))
             for _ in range(20)]
    await asyncio.sleep(0.05)
    await slack.socket_disconnect("refresh_requested", close_after=0.5)
    answers = await asyncio.gather(*burst)
    assert [status for status, _ in answers] == [200] * 20

    async def all_answered() -> list[dict[str, Any]] | None:
        found = await _responses(slack)
        return found if len(found) >= 20 else None

    responses = await eventually(all_answered, what="an answer to every command")
    await asyncio.sleep(1)  # room for a doubled answer to show
    responses = await _responses(slack)
    ids = [r["id"] for r in responses]
    assert len(ids) == 20 and len(set(ids)) == 20  # one answer per command
    delivered = (await slack.socket())["delivered"]
    assert any(d["retry_attempt"] > 0 for d in delivered)  # Slack did deliver again
    await eventually(lambda: connected(slack), what="the connection after the refresh")


async def test_a_warning_then_a_dropped_socket_reconnects(bridge: Bridge) -> None:
    slack = bridge.slack
    await slack.socket_disconnect("warning", close_after=0.1)
    await eventually(lambda: connected(slack), what="a new connection")
    status, _ = await sender(bridge).slash_command(BOB, "bob", SLACK_CHANNEL, "help")
    assert status == 200
    await eventually(lambda: _responses(slack), what="the command's answer")
