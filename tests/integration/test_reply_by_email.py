"""Reply by email from chat, and email answers coming back into the same chat thread;
forged and expired reply addresses are bounced. All on the real services."""

from __future__ import annotations

import email
import uuid
from collections.abc import AsyncIterator
from email import policy
from email.message import EmailMessage
from typing import Any

import aiohttp
import pytest

from bot.model import Address
from tests.bridge import SLACK_CHANNEL, SLACK_PEOPLE, Bridge, running_bridge
from tests.conftest import Services
from tests.integration.test_reply_in_chat import (
    bob_told,
    button,
    email_card,
    reply_from_slack,
    sender,
    slack_dm,
)
from tests.mailhelp import clear_mailbox, eventually, mailbox, make_mail, send_mail
from tests.slackapi.client import SlackControl

pytestmark = pytest.mark.integration

BOB = SLACK_PEOPLE["bob"]


@pytest.fixture
async def bridge(services: Services, slack: SlackControl, http: aiohttp.ClientSession
                 ) -> AsyncIterator[Bridge]:
    for user in ("alice", "bob", "carol", "dave"):
        await clear_mailbox(services, user)
    # The sales room's plain thread replies go out by email (the default keeps them in chat).
    routes = (f"{services.email('support')}=slack:{SLACK_CHANNEL},"
              f"{services.email('sales')}=matrix:{{room}};replies=email")
    async with running_bridge(services, slack, http, SWITCHBOARD_ROUTES=routes) as running:
        yield running


async def received(services: Services, user: str, subject_part: str) -> EmailMessage:
    async def find() -> EmailMessage | None:
        for raw in await mailbox(services, user):
            msg = email.message_from_bytes(raw, policy=policy.default)
            if subject_part in str(msg["Subject"]):
                return msg  # type: ignore[return-value]
        return None

    return await eventually(find, what=f"an email about {subject_part!r} at {user}'s")


def answer(to_msg: EmailMessage, sender_address: str, text: str,
           to: str | None = None) -> EmailMessage:
    """What a mail client sends when its user hits Reply."""
    reply = EmailMessage()
    reply["From"] = sender_address
    reply["To"] = to or str(to_msg["Reply-To"])
    reply["Subject"] = f"Re: {to_msg['Subject']}"
    reply["Message-ID"] = f"<{uuid.uuid4().hex}@switchboard.test>"
    reply["In-Reply-To"] = str(to_msg["Message-ID"])
    reply["References"] = f"{to_msg.get('References', '')} {to_msg['Message-ID']}".strip()
    reply.set_content(f"{text}\n\nOn Monday, Switchboard wrote:\n> quoted old text\n")
    return reply


async def reply_by_email_from_slack(bridge: Bridge, card: dict[str, Any], text: str,
                                    name: str = "bob") -> None:
    """Bob (shown as ``name``) clicks *Reply by email* on ``card``, the modal opens, Bob
    types and sends."""
    slack = sender(bridge)
    await slack.block_action(BOB, name, SLACK_CHANNEL, card, "reply_by_email",
                             button(card, "reply_by_email"))

    async def modal() -> dict[str, Any] | None:
        views = [v for v in (await bridge.slack.state())["views"]
                 if v["callback_id"] == "reply_by_email_modal"]
        return views[-1] if views else None

    view = await eventually(modal, what="the email modal")
    status, _ = await slack.view_submission(BOB, name, view, {"reply": {"text": text}})
    assert status == 200


async def test_slack_reply_by_email_and_the_answer_comes_back(bridge: Bridge) -> None:
    services = bridge.services
    alice = services.email("alice")
    card = await email_card(bridge, f"Alice <{alice}>", "Budget 2027", "What is the budget?")
    await reply_by_email_from_slack(bridge, card, "It is 40k, as planned.")
    await bob_told(bridge, f"Sent by email to {alice}")
    sent = await received(services, "alice", "Budget 2027")
    assert str(sent["From"]) == f"bob via Switchboard <{services.email('switchboard')}>"
    assert str(sent["Reply-To"]).startswith("bob <reply+")
    assert str(sent["Subject"]).startswith("Re: Budget 2027 [sb:")
    cid, _, eid = button(card, "reply_by_email").partition("/")
    original = await bridge.runtime.store.history.entry(cid, eid)
    assert original is not None and sent["In-Reply-To"] == original.meta["message_id"]
    body = _text(sent)
    assert body.startswith("It is 40k, as planned.")
    assert "> What is the budget?" in body

    await send_mail(services, answer(sent, alice, "Great, thanks Bob!"))

    async def in_thread() -> list[dict[str, Any]]:
        return [m for m in await bridge.slack_posts()
                if m.get("thread_ts") == card["ts"] and "Great, thanks Bob!" in str(m["blocks"])]

    (back,) = await eventually(in_thread, what="the email answer in the Slack thread")
    assert "quoted old text" not in str(back["blocks"])


async def test_matrix_reply_by_email_and_the_answer_comes_back(bridge: Bridge) -> None:
    services = bridge.services
    dave = services.email("dave")
    await send_mail(services, make_mail(f"Dave <{dave}>", services.email("sales"),
                                        "Delivery date", "When does it ship?"))
    (post,) = await eventually(bridge.room_posts, what="the Matrix post")
    await bridge.alice.call("PUT", f"/rooms/{bridge.room}/send/m.room.message/e1", {
        "msgtype": "m.text", "body": "!sb email It ships on Friday.",
        "m.relates_to": {"rel_type": "m.thread", "event_id": post["event_id"]}})
    sent = await received(services, "dave", "Delivery date")
    assert "It ships on Friday." in _text(sent)

    # a plain reply in the thread is a reply by email too
    await bridge.alice.call("PUT", f"/rooms/{bridge.room}/send/m.room.message/e2", {
        "msgtype": "m.text", "body": "And tracking follows.",
        "m.relates_to": {"rel_type": "m.thread", "event_id": post["event_id"]}})

    async def second() -> list[EmailMessage]:
        found = []
        for raw in await mailbox(services, "dave"):
            msg = email.message_from_bytes(raw, policy=policy.default)
            if "And tracking follows." in _text(msg):  # type: ignore[arg-type]
                found.append(msg)
        return found  # type: ignore[return-value]

    await eventually(second, what="the plain thread reply as email")
    await send_mail(services, answer(sent, dave, "Friday works for us."))

    async def in_thread() -> list[dict[str, Any]]:
        return [e for e in await bridge.alice.messages(bridge.room)
                if "Friday works for us." in e["content"].get("body", "")]

    (back,) = await eventually(in_thread, what="the email answer in the Matrix thread")
    assert back["content"]["m.relates_to"]["event_id"] == post["event_id"]


async def test_forged_and_expired_reply_addresses_are_bounced(bridge: Bridge) -> None:
    services = bridge.services
    dave = services.email("dave")
    forged = make_mail(dave, f"reply+{'a' * 24}@{services.mail_domain}", "Sneaky",
                       "let me in")
    await send_mail(services, forged)
    bounce = await received(services, "dave", "Not delivered: Sneaky")
    assert bounce["Auto-Submitted"] == "auto-replied"
    assert "expired or is not valid" in _text(bounce)

    # a real token, but used by someone it was not given to
    token = await bridge.runtime.store.tokens.issue(
        "c-someone", Address.email(services.email("alice")), 60)
    stolen = make_mail(dave, f"reply+{token}@{services.mail_domain}", "Stolen", "hi")
    await send_mail(services, stolen)
    bounce = await received(services, "dave", "Not delivered: Stolen")
    assert "given to another sender" in _text(bounce)
    assert await bridge.slack_posts() == [] and await bridge.room_posts() == []


def _text(msg: EmailMessage) -> str:
    part = msg.get_body(("plain",))
    return str(part.get_content()) if part is not None else ""


async def test_reply_by_email_to_a_delivered_chat_reply(bridge: Bridge) -> None:
    """Bob answered Alice's email in chat; Alice answers Bob's DM by email."""
    services = bridge.services
    await clear_mailbox(services, "bob")
    alice = SLACK_PEOPLE["alice"]
    await bridge.slack.add_user(alice, "alice", services.email("alice"))
    card = await email_card(bridge, services.email("alice"), "Offsite")
    await reply_from_slack(bridge, card, "Let's do Thursday.")
    (dm,) = await eventually(lambda: slack_dm(bridge, alice), what="Alice's DM")
    slack = sender(bridge)
    await slack.block_action(alice, "alice", dm["channel"], dm, "reply_by_email",
                             button(dm, "reply_by_email"))

    async def modal() -> dict[str, Any] | None:
        views = [v for v in (await bridge.slack.state())["views"]
                 if v["callback_id"] == "reply_by_email_modal"]
        return views[-1] if views else None

    view = await eventually(modal, what="the email modal")
    await slack.view_submission(alice, "alice", view, {"reply": {"text": "Thursday is good."}})
    sent = await received(services, "bob", "Offsite")  # Bob's email, from his Slack profile
    assert _text(sent).startswith("Thursday is good.")
    assert "> Let's do Thursday." in _text(sent)


async def test_message_shortcut_and_the_answer_comes_back_into_its_thread(
        bridge: Bridge) -> None:
    """Bob uses *Reply by email* on Carol's ordinary channel message; Carol's email answer
    comes back into that message's thread (not into Bob's DM)."""
    services = bridge.services
    carol, bob = SLACK_PEOPLE["carol"], SLACK_PEOPLE["bob"]
    message = await bridge.slack.user_message(SLACK_CHANNEL, carol, "Who has the projector?")
    slack = sender(bridge)
    status, _ = await slack.message_shortcut(bob, "bob", SLACK_CHANNEL, message,
                                             "reply_by_email_shortcut")
    assert status == 200

    async def modal() -> dict[str, Any] | None:
        views = [v for v in (await bridge.slack.state())["views"]
                 if v["callback_id"] == "reply_by_email_modal"]
        return views[-1] if views else None

    view = await eventually(modal, what="the email modal")
    await slack.view_submission(bob, "bob", view, {"reply": {"text": "I do, room 4."}})
    sent = await received(services, "carol", "Who has the projector?")
    assert "> Who has the projector?" in _text(sent)
    await send_mail(services, answer(sent, services.email("carol"), "Thanks, coming over."))

    async def answered() -> list[dict[str, Any]]:
        return [m for m in await bridge.slack_posts()
                if "Thanks, coming over." in str(m["blocks"])]

    (back,) = await eventually(answered, what="the answer in the message's thread")
    assert back["thread_ts"] == message["ts"]
    assert "carol@switchboard.test" in str(back["blocks"])
    assert not [m for m in await slack_dm(bridge, bob)
                if "Thanks, coming over." in str(m["blocks"])]
