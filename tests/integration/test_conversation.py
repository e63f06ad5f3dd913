"""The conversation goes on, on the real services: an email answered in chat, the answer
answered back in chat, and that answered by email, on Slack, on Matrix and across them,
with the history at each hop and presence checked at each hop; a Matrix person met for
the first time; a follow-up email not echoed to its author; a double *Queue* making one
chain of retries. (The Slack shortcut's answer coming back into its thread is in
test_reply_by_email.py.)"""

from __future__ import annotations

import asyncio
import email
import uuid
from collections.abc import AsyncIterator
from email import policy
from email.message import EmailMessage
from typing import Any

import aiohttp
import pytest
from redis import Redis
from rq import Queue

from bot.model import Address, DeliveryState, Provenance
from tests.bridge import SLACK_CHANNEL, SLACK_PEOPLE, Bridge, running_bridge
from tests.conftest import Services
from tests.integration.test_reply_in_chat import (
    bob_told,
    button,
    email_card,
    reply_from_slack,
    sender,
    set_matrix_presence,
    slack_dm,
)
from tests.mailhelp import (
    MatrixUser,
    clear_mailbox,
    eventually,
    mailbox,
    make_mail,
    new_matrix_user,
    send_mail,
)
from tests.slackapi.client import SlackControl

pytestmark = pytest.mark.integration

ALICE, BOB = SLACK_PEOPLE["alice"], SLACK_PEOPLE["bob"]


@pytest.fixture
async def bridge(services: Services, slack: SlackControl, http: aiohttp.ClientSession
                 ) -> AsyncIterator[Bridge]:
    for user in ("alice", "bob", "carol", "dave"):
        await clear_mailbox(services, user)
    async with running_bridge(services, slack, http, SWITCHBOARD_RETRY_INTERVAL="1",
                              SWITCHBOARD_RETRY_DEADLINE="3600") as running:
        yield running


async def link(bridge: Bridge, mail: str, *chat: Address) -> None:
    book = bridge.runtime.store.address_book
    await book.link(Address.email(mail), provenance=Provenance.IMPORTED, verified=True)
    for account in chat:
        await book.link(account, provenance=Provenance.IMPORTED, verified=True,
                        to=Address.email(mail))


async def compose(bridge: Bridge, user: str, name: str, message: dict[str, Any],
                  action: str, text: str) -> None:
    """``user`` clicks ``action`` on ``message`` (in a channel or their DM), types, sends."""
    slack = sender(bridge)
    before = len((await bridge.slack.state())["views"])
    status, _ = await slack.block_action(user, name, message["channel"], message, action,
                                         button(message, action))
    assert status == 200

    async def modal() -> dict[str, Any] | None:
        views = (await bridge.slack.state())["views"]
        return views[-1] if len(views) > before else None

    view = await eventually(modal, what=f"the {action} modal")
    status, _ = await slack.view_submission(user, name, view, {"reply": {"text": text}})
    assert status == 200


async def dm_with(bridge: Bridge, user: str, text: str) -> dict[str, Any]:
    async def find() -> dict[str, Any] | None:
        return next((m for m in await slack_dm(bridge, user) if text in str(m["blocks"])),
                    None)
    return await eventually(find, what=f"the DM to {user} with {text!r}")


async def received(services: Services, user: str, text: str) -> EmailMessage:
    async def find() -> EmailMessage | None:
        for raw in await mailbox(services, user):
            msg = email.message_from_bytes(raw, policy=policy.default)
            body = msg.get_body(("plain",))  # type: ignore[attr-defined]
            if body is not None and text in body.get_content():
                return msg  # type: ignore[return-value]
        return None
    return await eventually(find, within=30, what=f"an email with {text!r} at {user}'s")


def presence_asked(state: dict[str, Any], user: str) -> bool:
    return any(name == "users.getPresence" and args.get("user") == user
               for name, args in state["calls"])


async def test_three_hops_on_slack(bridge: Bridge) -> None:
    services = bridge.services
    alice = services.email("alice")
    await bridge.slack.add_user(ALICE, "alice", alice, "active")
    tag = uuid.uuid4().hex[:6]
    card = await email_card(bridge, f"Alice <{alice}>", f"Offsite {tag}", "Where do we meet?")
    # Hop 1: Bob answers the email in chat; Alice is on Slack and present.
    await reply_from_slack(bridge, card, "At the lake house.")
    to_alice = await dm_with(bridge, ALICE, "At the lake house.")
    assert presence_asked(await bridge.slack.state(), ALICE)
    # Hop 2: Alice answers Bob's reply back, in chat, from her DM.
    await compose(bridge, ALICE, "alice", to_alice, "reply_in_chat", "Which day?")
    to_bob = await dm_with(bridge, BOB, "Which day?")
    shown = str(to_bob["blocks"])
    assert "alice answered you in chat" in shown
    assert "Where do we meet?" in shown and "At the lake house." in shown  # the history
    assert presence_asked(await bridge.slack.state(), BOB)
    # Hop 3: Bob answers that by email; it reaches Alice's inbox with everything so far.
    await compose(bridge, BOB, "bob", to_bob, "reply_by_email", "Thursday, 10am.")
    sent = await received(services, "alice", "Thursday, 10am.")
    body = sent.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    for earlier in ("Where do we meet?", "At the lake house.", "Which day?"):
        assert earlier in body


async def test_three_hops_on_matrix_and_across(bridge: Bridge, http: aiohttp.ClientSession
                                               ) -> None:
    """Dave (email, and on Matrix) writes to support@ (Slack). Bob answers in chat: Dave
    gets it in his Matrix DM; Dave answers back there with `!sb im`; Bob gets that on
    Slack; Dave then answers Bob's answer by email with `!sb email`... from Matrix."""
    services = bridge.services
    dave_mail = services.email("dave")
    dave = await new_matrix_user(services, http, "dave")  # no rooms from earlier tests
    await link(bridge, dave_mail, Address.matrix(dave.user_id))
    bot = await MatrixUser(services, "switchboard", http).login()
    await bot.call("POST", f"/rooms/{bridge.room}/invite", {"user_id": dave.user_id})
    await dave.join(bridge.room)  # shares a room with the bot: his presence is visible
    await set_matrix_presence(dave, "online")
    await bridge.slack.add_user(BOB, "bob", services.email("bob"), "active")
    tag = uuid.uuid4().hex[:6]
    card = await email_card(bridge, f"Dave <{dave_mail}>", f"Invoice {tag}", "Is it paid?")
    await reply_from_slack(bridge, card, f"Paid on Monday {tag}.")

    async def dave_dm() -> tuple[str, dict[str, Any]] | None:
        room = await bridge.runtime.store.matrix.dm_room(dave.user_id)
        if room is None:
            return None
        if room not in (await dave.call("GET", "/joined_rooms"))["joined_rooms"]:
            await dave.join(room)
        for event in await dave.messages(room):
            if f"Paid on Monday {tag}." in event["content"].get("body", ""):
                return room, event
        return None

    try:
        room, delivered = await eventually(dave_dm, within=60, what="Bob's reply in Dave's DM")
    except AssertionError:
        told = [str(m["blocks"])[:300] for m in (await bridge.slack.state())["messages"]
                if m["ephemeral_to"] == BOB]
        raise AssertionError(f"Bob's reply did not reach Dave; Bob was told {told}") from None
    assert "Is it paid?" in delivered["content"]["body"]  # history came along
    # Dave answers back in his direct chat with the bot, outside any thread.
    await dave.call("PUT", f"/rooms/{room}/send/m.room.message/a{uuid.uuid4().hex}",
                    {"msgtype": "m.text", "body": "!sb im Thanks! Receipt please."})
    to_bob = await dm_with(bridge, BOB, "Thanks! Receipt please.")
    assert f"Paid on Monday {tag}." in str(to_bob["blocks"])
    assert "Is it paid?" in str(to_bob["blocks"])
    assert presence_asked(await bridge.slack.state(), BOB)
    # Bob answers back in chat: Dave's presence is asked on Matrix, and he gets it.
    await compose(bridge, BOB, "bob", to_bob, "reply_in_chat", "Sent to your inbox.")

    async def second() -> bool:
        return any("Sent to your inbox." in e["content"].get("body", "")
                   for e in await dave.messages(room))

    await eventually(second, within=30, what="Bob's answer back in Dave's DM")
    # Dave ends it by email, from Matrix: `!sb email` in the DM answers the latest there.
    await dave.call("PUT", f"/rooms/{room}/send/m.room.message/b{uuid.uuid4().hex}",
                    {"msgtype": "m.text", "body": "!sb email Got it, thanks Bob."})
    sent = await received(services, "bob", "Got it, thanks Bob.")
    body = sent.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert "Sent to your inbox." in body and "Is it paid?" in body
    for joined in (await dave.call("GET", "/joined_rooms"))["joined_rooms"]:
        await dave.leave(joined)  # the next test's Dave starts with no rooms
    await dave.logout()
    await bot.logout()


async def test_a_matrix_person_met_for_the_first_time_is_not_taken_for_present(
        bridge: Bridge, http: aiohttp.ClientSession) -> None:
    """Carol shares no room with the bot: her homeserver will not say whether she is
    there. Bob is asked what to do, as for someone away, and told why."""
    services = bridge.services
    carol_mail = services.email("carol")
    carol = await new_matrix_user(services, http, "carol")
    await set_matrix_presence(carol, "offline")
    await link(bridge, carol_mail, Address.matrix(carol.user_id))
    card = await email_card(bridge, f"Carol <{carol_mail}>", f"First {uuid.uuid4().hex[:6]}")
    await reply_from_slack(bridge, card, "Hello Carol!")
    told = await bob_told(bridge, "cannot see yet whether")
    assert "reached" not in str(told) and "invited them to a direct chat" in str(told)
    invites = await carol.invites()
    assert invites, "the bot opens the direct chat that lets it see her presence"
    deliveries = await bridge.runtime.store.deliveries.from_sender(
        Address.slack(bridge.team, BOB), 10)
    assert [d.state for d in deliveries] == [DeliveryState.PENDING]
    for room in invites:
        await carol.call("POST", f"/rooms/{room}/leave", {})
    await carol.logout()


async def test_a_follow_up_email_is_not_echoed_to_its_author(bridge: Bridge) -> None:
    services = bridge.services
    alice = services.email("alice")
    await bridge.slack.add_user(ALICE, "alice", alice, "active")
    subject = f"Badge {uuid.uuid4().hex[:6]}"
    card = await email_card(bridge, f"Alice <{alice}>", subject, "My badge does not work.")
    await reply_from_slack(bridge, card, "Which door?")
    await dm_with(bridge, ALICE, "Which door?")
    original = await bridge.runtime.store.history.entry(*button(card, "reply_in_chat")
                                                        .split("/"))
    assert original is not None
    follow = make_mail(f"Alice <{alice}>", services.email("support"), f"Re: {subject}",
                       "The back door, sorry.", in_reply_to=original.meta["message_id"])
    await send_mail(services, follow)

    async def in_thread() -> bool:
        return any("The back door, sorry." in str(m["blocks"]) and m.get("thread_ts")
                   == card["ts"] for m in await bridge.slack_posts())

    await eventually(in_thread, what="the follow-up in the channel thread")
    await asyncio.sleep(1.0)
    assert not [m for m in await slack_dm(bridge, ALICE)
                if "The back door, sorry." in str(m["blocks"])]


async def test_a_double_queue_click_makes_one_chain(bridge: Bridge) -> None:
    services = bridge.services
    alice = services.email("alice")
    await bridge.slack.add_user(ALICE, "alice", alice, "away")
    card = await email_card(bridge, f"Alice <{alice}>", f"Later {uuid.uuid4().hex[:6]}")
    await reply_from_slack(bridge, card, "Whenever you are back.")
    choice = await bob_told(bridge, "What should happen to your reply?")
    delivery = next(e["value"] for b in choice["blocks"] if b["type"] == "actions"
                    for e in b["elements"] if e["action_id"] == "delivery_queue")
    slack = sender(bridge)
    clicks = [slack.block_action(BOB, "bob", SLACK_CHANNEL, choice, "delivery_queue",
                                 delivery) for _ in range(2)]
    assert [s for s, _ in await asyncio.gather(*clicks)] == [200, 200]
    await eventually(lambda: _queued(bridge, delivery), what="the delivery queued")
    await asyncio.sleep(0.5)
    settings = bridge.settings
    with Redis.from_url(settings.redis_url) as redis:
        queue = Queue(bridge.runtime.store.keys.queue_name(), connection=redis)
        jobs = [j for j in queue.scheduled_job_registry.get_job_ids() if delivery in j]
    assert len(jobs) == 1, jobs


async def _queued(bridge: Bridge, delivery: str) -> bool:
    found = await bridge.runtime.store.deliveries.get(delivery)
    return found is not None and found.state is DeliveryState.QUEUED
