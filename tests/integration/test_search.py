"""Search across email and chat, as permissions allow, in Redis's own query engine (the
RediSearch module the test services load into every Redis)."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from tests.bridge import SLACK_CHANNEL, SLACK_PEOPLE, Bridge, running_bridge
from tests.conftest import Services
from tests.integration.test_commands import matrix_runner, slack_runner
from tests.integration.test_reply_by_email import received
from tests.integration.test_reply_in_chat import sender
from tests.mailhelp import clear_mailbox, eventually, make_mail, send_mail
from tests.servers import run_cli
from tests.slackapi.client import SlackControl

pytestmark = pytest.mark.integration

ERIN = "U0ERIN0001"  # in the workspace, not in the channel, not an admin


@pytest.fixture
async def bridge(services: Services, slack: SlackControl, http: aiohttp.ClientSession
                 ) -> AsyncIterator[Bridge]:
    await clear_mailbox(services, "alice")
    await slack.add_user(ERIN, "erin", services.email("erin"))
    # Support's thread replies go out by email; sales is the Matrix room.
    routes = (f"{services.email('support')}=slack:{SLACK_CHANNEL};replies=email,"
              f"{services.email('sales')}=matrix:{{room}}")
    async with running_bridge(services, slack, http, SWITCHBOARD_ROUTES=routes) as running:
        yield running


def cli_env(bridge: Bridge) -> dict[str, str]:
    return {**os.environ, **bridge.env,
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}


async def test_found_from_both_sides_as_permissions_allow_until_forgotten(
        bridge: Bridge) -> None:
    services = bridge.services
    alice = services.email("alice")
    mail = make_mail(f"Alice <{alice}>", services.email("support"), "Order 5521 refund",
                     "Will you refund the full amount for order 5521? <!channel> *now* "
                     "<b>please</b>")
    mail["Cc"] = services.email("sales")  # posted in the Matrix room too
    await send_mail(services, mail)

    async def card() -> dict[str, object] | None:
        return next((m for m in await bridge.slack_posts() if "Order 5521" in str(m["blocks"])),
                    None)
    posted = await eventually(card, what="the card in Slack")

    async def in_matrix() -> bool:  # the last place: the email is in history from then on
        return any("Order 5521" in str(e["content"].get("body", ""))
                   for e in await bridge.alice.messages(bridge.room, 50))
    await eventually(in_matrix, what="the card in the Matrix room")
    # Bob answers in the Slack thread; the route sends it by email.
    await sender(bridge).event({
        "type": "message", "channel": SLACK_CHANNEL, "channel_type": "channel",
        "user": SLACK_PEOPLE["bob"], "text": "Yes: we refund the whole amount by Friday.",
        "ts": f"{time.time():.6f}", "thread_ts": posted["ts"]})  # type: ignore[index]
    await received(services, "alice", "Order 5521 refund")

    bob = slack_runner(bridge, SLACK_PEOPLE["bob"], "bob")
    found = await eventually(lambda: _with(bob, "search refund", "2 found"),
                             what="both found from Slack")
    assert "you *refund* the full amount" in found
    assert "we *refund* the whole amount by Friday" in found
    assert f"email from {alice}" in found
    assert "https://slack.com/archives/" in found  # a link back to where it was posted
    # What the sender wrote is shown as text: Slack gets it escaped (no mention, no
    # markup of theirs: their *now* lost its stars).
    raw = str((await bridge.slack.state())["responses"][-1]["blocks"])
    assert "&lt;!channel&gt;" in raw and "<!channel>" not in raw and "*now*" not in raw
    # From Matrix: Alice is in the room it was posted in.
    matrix = matrix_runner(bridge, bridge.alice)
    from_matrix = await matrix("search refund")
    assert "2 found" in from_matrix and "by Friday" in from_matrix
    assert "https://matrix.to/#/" in from_matrix
    # Matrix shows the notice as plain text (no HTML part): the sender's markup is inert.
    notices = [e["content"] for e in await bridge.alice.messages(bridge.room, 50)
               if "2 found for refund" in str(e["content"].get("body", ""))]
    assert notices and all("formatted_body" not in n for n in notices)
    assert "<b>please</b" in notices[-1]["body"]

    # Phrases and filters.
    assert "1 found" in await bob('search "full amount"')
    assert "1 found" in await bob(f"search refund from:{alice}")
    assert "by Friday" not in await bob(f"search refund from:{alice}")
    assert "1 found" in await bob(f"search refund to:{alice}")
    assert "Nothing found" in await bob("search refund has:attachment")
    assert "Nothing found" in await bob("search refund before:2001-01-01")
    assert "2 found" in await bob("search refund after:2001-01-01")
    assert "2 found" in await bob(f"search refund in:{SLACK_CHANNEL}")

    # Erin is not in the conversation nor in its rooms: the same answer as no match.
    erin = slack_runner(bridge, ERIN, "erin")
    hidden = await erin("search refund")
    assert hidden == "Nothing found for refund."
    assert (await erin("search qqqzzx")) == "Nothing found for qqqzzx."

    # Rebuilt from history, the index answers the same.
    before = await bob("search refund")
    code, out, err = await run_cli("search", "reindex", env=cli_env(bridge))
    assert code == 0, err
    assert "indexed" in out
    assert await bob("search refund") == before

    # Alice forgotten: her words are no longer found.
    code, out, err = await run_cli("forget", alice, env=cli_env(bridge))
    assert code == 0, err
    gone = await bob("search 5521")
    assert gone == "Nothing found for 5521."


async def _with(run: object, text: str, words: str) -> str | None:
    said = await run(text)  # type: ignore[operator]
    return str(said) if words in said else None
