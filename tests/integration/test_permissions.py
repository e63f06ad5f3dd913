"""Permissions on the real services: who may invite and use the bot, who may mail people
outside the organisation and how often, who may read which history, and what a plain
message in an email's thread does. Every refusal is in the audit trail."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import aiohttp
import pytest

from bot.model import Address, Provenance
from tests.bridge import SLACK_PEOPLE, Bridge, running_bridge
from tests.conftest import Services
from tests.integration.test_commands import matrix_runner, slack_runner
from tests.mailhelp import (
    MatrixUser,
    clear_mailbox,
    eventually,
    mailbox,
    make_mail,
    send_mail,
)
from tests.slackapi.client import SlackControl

pytestmark = pytest.mark.integration

OUTSIDER = "carol@partner.test"


@pytest.fixture
async def bridge(services: Services, slack: SlackControl, http: aiohttp.ClientSession
                 ) -> AsyncIterator[Bridge]:
    for user in ("alice", "dave", OUTSIDER):
        await clear_mailbox(services, user)
    server = services.matrix_server
    async with running_bridge(
            services, slack, http,
            SWITCHBOARD_PERMISSIONS=f"{server}=user,@dave:{server}=none,"
                                    f"@bob:{server}=admin,slack=user",
            SWITCHBOARD_MAIL_RATE_USER="2/3600") as running:
        yield running


async def room_with_bot(services: Services, http: aiohttp.ClientSession, user: str
                        ) -> tuple[str, MatrixUser]:
    """A room the bot makes, with ``user`` in it (the bot's rooms need no invitation)."""
    bot = await MatrixUser(services, "switchboard", http).login()
    person = await MatrixUser(services, user, http).login()
    created = await bot.call("POST", "/createRoom", {"name": f"{user} {uuid.uuid4().hex[:6]}",
                                                    "invite": [person.user_id]})
    await person.join(created["room_id"])
    return created["room_id"], person


def runner_in(bridge: Bridge, room: str, user: MatrixUser):  # type: ignore[no-untyped-def]
    other = Bridge(bridge.runtime, bridge.settings, bridge.env, room, user, bridge.slack,
                   bridge.services)
    return matrix_runner(other, user)


async def test_invitations_only_from_allowed_people(bridge: Bridge, services: Services,
                                                    http: aiohttp.ClientSession) -> None:
    bot_id = services.matrix_id("switchboard")

    async def invite_from(name: str) -> tuple[str, MatrixUser]:
        person = await MatrixUser(services, name, http).login()
        room = (await person.call("POST", "/createRoom", {"invite": [bot_id]}))["room_id"]
        return room, person

    async def bot_membership(room: str, person: MatrixUser) -> str | None:
        state = await person.call("GET", f"/rooms/{room}/state")
        found = [e["content"]["membership"] for e in state
                 if e["type"] == "m.room.member" and e["state_key"] == bot_id]
        return found[0] if found and found[0] != "invite" else None

    refused, dave = await invite_from("dave")
    accepted, carol = await invite_from("carol")
    assert await eventually(lambda: bot_membership(accepted, carol),
                            what="the bot joining carol's room") == "join"
    assert await eventually(lambda: bot_membership(refused, dave),
                            what="the bot declining dave's room") == "leave"
    events = await bridge.runtime.store.audit.recent(20)
    assert any(e.action == "invite_refused" and e.actor == f"matrix:@dave:{services.matrix_server}"
               and e.target == refused for e in events)


async def test_someone_not_allowed_is_told_and_recorded(bridge: Bridge, services: Services,
                                                        http: aiohttp.ClientSession) -> None:
    room, dave = await room_with_bot(services, http, "dave")
    answer = await runner_in(bridge, room, dave)(f"history {services.email('alice')}")
    assert answer.startswith("Not allowed:") and "not allowed to use Switchboard" in answer
    events = await bridge.runtime.store.audit.recent(20)
    assert any(e.action == "refused" and "dave" in e.actor for e in events)


async def test_mail_to_outsiders_needs_a_verified_link_and_is_rate_limited(
        bridge: Bridge, services: Services) -> None:
    run = matrix_runner(bridge, bridge.alice)
    answer = await run(f"email {OUTSIDER} Hello from Alice (Finance)")
    assert "outside the organisation" in answer and "link" in answer
    assert "Sent by email" in await run(f"email {services.email('dave')} Inside is fine")

    # Once Alice's own address is linked and verified, she may; each email names her
    # real Matrix account whatever name she shows.
    alice_email = Address.email(services.email("alice"))
    me = Address.matrix(bridge.alice.user_id)
    await bridge.runtime.store.address_book.link(me, provenance=Provenance.SELF_LINKED,
                                                 verified=True)
    await bridge.runtime.store.address_book.link(alice_email, provenance=Provenance.SELF_LINKED,
                                                 verified=True, to=me)
    marker = uuid.uuid4().hex[:6]
    assert "Sent by email" in await run(f"email {OUTSIDER} Invoice {marker} attached")

    async def received() -> list[bytes]:
        return [m for m in await mailbox(services, OUTSIDER) if marker.encode() in m]

    (raw,) = await eventually(received, what="the email at the outsider's")
    assert f"X-Switchboard-Sender: matrix:{bridge.alice.user_id}".encode() in raw
    # The rate: two emails per user per window here (the refused one did not count).
    refused = await run(f"email {OUTSIDER} One too many")
    assert "the most allowed" in refused
    trail = await bridge.runtime.store.audit.recent(50)
    assert [e.action for e in trail].count("mail_sent") == 2
    assert sum(e.action == "refused" and e.actor == str(me) for e in trail) == 2


async def test_history_and_whois_show_only_what_the_asker_may_see(
        bridge: Bridge, services: Services, http: aiohttp.ClientSession) -> None:
    secret = f"Your new salary {uuid.uuid4().hex[:6]}"
    await send_mail(services, make_mail(f"HR <{OUTSIDER}>", services.email("sales"), secret,
                                        "is 100k."))
    await eventually(bridge.room_posts, what="the post in the sales room")
    # Alice is in the sales room: she sees it.
    assert secret in await matrix_runner(bridge, bridge.alice)(f"history {OUTSIDER}")
    # Carol is a user, but neither took part nor is in the room.
    room, carol = await room_with_bot(services, http, "carol")
    as_carol = runner_in(bridge, room, carol)
    assert secret not in await as_carol(f"history {OUTSIDER}")
    await bridge.runtime.store.address_book.link(
        Address.email(OUTSIDER), provenance=Provenance.IMPORTED, verified=True)
    await bridge.runtime.store.address_book.link(
        Address.slack(bridge.team, SLACK_PEOPLE["carol"]), provenance=Provenance.IMPORTED,
        verified=True, to=Address.email(OUTSIDER))
    assert "Not allowed" in await as_carol(f"whois {OUTSIDER}")
    # Bob is an admin: he sees everything.
    room, bob = await room_with_bot(services, http, "bob")
    as_bob = runner_in(bridge, room, bob)
    assert secret in await as_bob(f"history {OUTSIDER}")
    assert f"email: {OUTSIDER}" in await as_bob(f"whois {OUTSIDER}")
    # On Slack nobody is in the sales room either.
    slack_bob = slack_runner(bridge, SLACK_PEOPLE["bob"], "bob")
    assert secret not in await slack_bob(f"history {OUTSIDER}")


async def test_plain_thread_replies_stay_in_chat_by_default(bridge: Bridge,
                                                            services: Services) -> None:
    subject = f"Contract {uuid.uuid4().hex[:6]}"
    await send_mail(services, make_mail(f"Carol <{OUTSIDER}>", services.email("sales"),
                                        subject, "Can you sign?"))
    (post,) = await eventually(bridge.room_posts, what="the Matrix post")
    await bridge.alice.call("PUT", f"/rooms/{bridge.room}/send/m.room.message/p1", {
        "msgtype": "m.text", "body": "Internal: legal says do not sign yet.",
        "m.relates_to": {"rel_type": "m.thread", "event_id": post["event_id"]}})
    await bridge.alice.call("PUT", f"/rooms/{bridge.room}/send/m.room.message/p2", {
        "msgtype": "m.text", "body": "!sb email We will come back to you on Monday.",
        "m.relates_to": {"rel_type": "m.thread", "event_id": post["event_id"]}})

    async def answers() -> list[bytes]:
        return [m for m in await mailbox(services, OUTSIDER) if b"Monday" in m]

    await eventually(answers, what="the explicit answer at the sender's")
    await asyncio.sleep(1.0)
    assert not [m for m in await mailbox(services, OUTSIDER) if b"legal says" in m]


async def test_slack_workspace_not_allowed(services: Services, slack: SlackControl,
                                           http: aiohttp.ClientSession) -> None:
    async with running_bridge(services, slack, http,
                              SWITCHBOARD_PERMISSIONS=f"{services.matrix_server}=user") as bridge:
        answer = await slack_runner(bridge, SLACK_PEOPLE["bob"], "bob")("help")
        assert answer.startswith("Not allowed") and "Switchboard commands" not in answer
