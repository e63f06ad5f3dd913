"""Every command on both networks (Slack `/switchboard`, Matrix `!sb`), including the
link / verify round trip through a real mailbox and the refusals."""

from __future__ import annotations

import email
import itertools
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from email import policy
from typing import Any

import aiohttp
import pytest

from bot.model import Address, Provenance
from tests.bridge import SLACK_CHANNEL, SLACK_PEOPLE, Bridge, running_bridge
from tests.conftest import Services
from tests.integration.test_reply_in_chat import sender, slack_dm
from tests.mailhelp import MatrixUser, clear_mailbox, eventually, mailbox
from tests.slackapi.client import SlackControl

pytestmark = pytest.mark.integration

Run = Callable[[str], Awaitable[str]]
_txn = itertools.count()


@pytest.fixture
async def bridge(services: Services, slack: SlackControl, http: aiohttp.ClientSession
                 ) -> AsyncIterator[Bridge]:
    for user in ("alice", "bob", "carol", "dave"):
        await clear_mailbox(services, user)
    async with running_bridge(services, slack, http) as running:
        yield running


def slack_runner(bridge: Bridge, user: str, name: str) -> Run:
    async def run(text: str) -> str:
        before = len((await bridge.slack.state())["responses"])
        status, _ = await sender(bridge).slash_command(user, name, SLACK_CHANNEL, text)
        assert status == 200

        async def answer() -> str | None:
            responses = (await bridge.slack.state())["responses"]
            if len(responses) <= before:
                return None
            last = responses[-1]
            values = [e["value"] for b in last.get("blocks", []) if b["type"] == "actions"
                      for e in b["elements"]]
            text = "\n".join(b["text"]["text"] for b in last.get("blocks", [])
                             if b["type"] == "section")
            text = text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
            # the text, then the ids the buttons carry (as Matrix shows them in text)
            return text + "".join(f"\n[{v}]" for v in values)

        return await eventually(answer, what=f"the answer to /switchboard {text}")
    return run


def matrix_runner(bridge: Bridge, user: MatrixUser, room: str | None = None) -> Run:
    """``!sb TEXT`` typed by ``user`` in ``room`` (the bridge's room unless named)."""
    room = room or bridge.room

    async def run(text: str) -> str:
        sent = await user.call("PUT", f"/rooms/{room}/send/m.room.message/"
                                      f"c{uuid.uuid4().hex}",
                               {"msgtype": "m.text", "body": f"!sb {text}"})

        async def answer() -> str | None:
            events = await user.messages(room, 50)
            seen = False
            for e in events:
                if e["event_id"] == sent["event_id"]:
                    seen = True
                elif seen and e["content"].get("msgtype") == "m.notice":
                    return str(e["content"]["body"])
            return None

        return await eventually(answer, what=f"the answer to !sb {text}")
    return run


async def code_in_mailbox(services: Services, user: str) -> str:
    async def code() -> str | None:
        for raw in await mailbox(services, user):
            msg = email.message_from_bytes(raw, policy=policy.default)
            if "verification code" in str(msg["Subject"]):
                body = msg.get_body(("plain",))
                found = re.search(r"link verify (\d{6})", str(body.get_content()) if body else "")
                if found:
                    return found.group(1)
        return None

    return await eventually(code, what=f"the code in {user}'s mailbox")


@pytest.fixture(params=["slack", "matrix"])
def network(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def runner_for(bridge: Bridge, network: str) -> tuple[Run, Address, str]:
    """A command runner for one person on the network, their chat address and mail user."""
    if network == "slack":
        return (slack_runner(bridge, SLACK_PEOPLE["bob"], "bob"),
                Address.slack(bridge.team, SLACK_PEOPLE["bob"]), "bob")
    return (matrix_runner(bridge, bridge.alice), Address.matrix(bridge.alice.user_id),
            "alice")


async def test_help_and_unknown(bridge: Bridge, network: str) -> None:
    run, _, _ = runner_for(bridge, network)
    assert "Switchboard commands:" in await run("help")
    answer = await run("frobnicate")
    assert "Unknown command 'frobnicate'" in answer and "link <email>" in answer


async def test_link_verify_whois_unlink(bridge: Bridge, network: str) -> None:
    services = bridge.services
    run, me, mail_user = runner_for(bridge, network)
    address = services.email(mail_user)
    answer = await run(f"link {address}")
    assert f"A 6-digit code was emailed to {address}" in answer
    code = await code_in_mailbox(services, mail_user)
    assert f"Linked: {address}" in await run(f"link verify {code}")
    identity = await bridge.runtime.store.address_book.resolve(Address.email(address))
    assert identity is not None and me in identity.addresses()
    mapping = identity.mapping(Address.email(address))
    assert mapping is not None and mapping.provenance is Provenance.SELF_LINKED
    assert mapping.verified
    who = await run(f"whois {address}")
    assert f"email: {address} (self-linked, verified)" in who
    assert f"{me.network.value}: {me.value}" in who
    assert await run(f"unlink {address}") == f"Unlinked {address}."
    assert await bridge.runtime.store.address_book.resolve(Address.email(address)) is None
    assert "nothing to unlink" in await run(f"unlink {address}")


async def test_link_refusals(bridge: Bridge, network: str) -> None:
    services = bridge.services
    run, _, mail_user = runner_for(bridge, network)
    address = services.email(mail_user)
    assert "no pending link" in await run("link verify 123456")
    await run(f"link {address}")
    code = await code_in_mailbox(services, mail_user)
    wrong = "000000" if code != "000000" else "111111"
    assert "that code is wrong" in await run(f"link verify {wrong}")
    # the code belongs to this user only: someone else typing it gets nothing
    other = (matrix_runner(bridge, bridge.alice) if network == "slack"
             else slack_runner(bridge, SLACK_PEOPLE["carol"], "carol"))
    assert "no pending link" in await other(f"link verify {code}")
    assert "Linked" in await run(f"link verify {code}")
    # an address linked to someone else cannot be claimed
    assert "already linked to someone else" in await other(f"link {address}")
    assert "is not an email address" in await run("link @someone:switchboard.test")


async def test_history_email_im_and_pending(bridge: Bridge, network: str) -> None:
    services = bridge.services
    run, me, _ = runner_for(bridge, network)
    carol = services.email("carol")
    answer = await run(f"email {carol} Lunch on Friday? Let me know.")
    assert f"Sent by email to {carol}" in answer

    async def lunch() -> Any:
        for raw in await mailbox(services, "carol"):
            msg = email.message_from_bytes(raw, policy=policy.default)
            if "Lunch on Friday?" in str(msg["Subject"]):
                return msg
        return None

    msg = await eventually(lunch, what="the new email at carol's")
    assert str(msg["Reply-To"]).startswith(f"{me.value.split(':')[0].lstrip('@')}"
                                           if network == "matrix" else "bob")
    history = await run(f"history {carol}")
    assert f"History with {carol}" in history and "Lunch on Friday?" in history
    assert "No history" in await run(f"history {carol} 5")

    # im by email address: carol is on Slack (learned from users.lookupByEmail)
    await bridge.slack.set_presence(SLACK_PEOPLE["carol"], "away")
    assert "You have no queued or failed deliveries." in await run("pending")
    answer = await run(f"im {carol} Are you around?")
    assert "is away on Slack" in answer
    found = re.search(r"\b(d[0-9a-f]{24})\b", answer)
    assert found is not None
    delivery = found.group(1)
    assert "Queued" in await run(f"queue {delivery}")
    pending = await run("pending")
    assert delivery in pending and "queued" in pending
    assert "Cancelled" in await run(f"cancel {delivery}")
    assert "You have no queued or failed deliveries." in await run("pending")
    await bridge.slack.set_presence(SLACK_PEOPLE["carol"], "active")
    assert "reached" in await run(f"im {carol} Now?")
    # A new message is not presented as a reply to an email that never was.
    dms = [m for m in await slack_dm(bridge, SLACK_PEOPLE["carol"]) if "Now?" in str(m["blocks"])]
    assert dms and "sent you a message through Switchboard" in str(dms[-1]["blocks"])
    assert "(no subject)" not in str(dms[-1]["blocks"])
