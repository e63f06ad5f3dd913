"""Email as people use it: reply to all and Cc that leak nothing, a Cc'd person's answer
answered to them, forwarding with a note, blocking a sender, plus-addresses, and
automatic replies, on the real mail servers and the local Slack."""

from __future__ import annotations

import email
import time
from collections.abc import AsyncIterator
from email import policy
from email.message import EmailMessage
from typing import Any

import aiohttp
import pytest

from tests.bridge import SLACK_CHANNEL, SLACK_PEOPLE, Bridge, running_bridge
from tests.conftest import Services
from tests.integration.test_reply_by_email import _text, answer, received
from tests.integration.test_reply_in_chat import bob_told, button, sender
from tests.mailhelp import clear_mailbox, eventually, mailbox, make_mail, send_mail
from tests.slackapi.client import SlackControl

pytestmark = pytest.mark.integration

BOB = SLACK_PEOPLE["bob"]
DANA = "U0DANA0001"  # a workspace admin: blocking is for admins
SALES = "C0SALES001"
AUTOREPLY = "Thanks - we have your email and answer within a day."


@pytest.fixture
async def bridge(services: Services, slack: SlackControl, http: aiohttp.ClientSession
                 ) -> AsyncIterator[Bridge]:
    for user in ("alice", "bob", "carol", "dave", f"dave@{services.env['SB_OTHER_MAIL_DOMAIN']}"):
        await clear_mailbox(services, user)
    await slack.add_user(DANA, "dana", services.email("dana"), is_admin=True)
    await slack.add_channel(SALES, "sales", [DANA, *SLACK_PEOPLE.values()])
    routes = (f"{services.email('support')}=slack:{SLACK_CHANNEL};replies=email,"
              f"{services.email('sales')}=slack:{SALES};name=Sales;autoreply={AUTOREPLY}")
    async with running_bridge(services, slack, http, SWITCHBOARD_ROUTES=routes) as running:
        yield running


def outsider(services: Services, name: str) -> str:
    return f"{name}@{services.env['SB_OTHER_MAIL_DOMAIN']}"


async def card_in(bridge: Bridge, channel: str, words: str) -> dict[str, Any]:
    async def found() -> dict[str, Any] | None:
        return next((m for m in await bridge.slack.messages(channel)
                     if words in str(m["blocks"])), None)
    return await eventually(found, what=f"the card of {words!r} in {channel}")


async def modal(bridge: Bridge, callback: str, count: int = 1) -> dict[str, Any]:
    async def found() -> dict[str, Any] | None:
        views = [v for v in (await bridge.slack.state())["views"] if v["callback_id"] == callback]
        return views[-1] if len(views) >= count else None
    return await eventually(found, what=f"the {callback} modal")


def messages(raws: list[bytes], words: str) -> list[EmailMessage]:
    found = [email.message_from_bytes(r, policy=policy.default) for r in raws]
    return [m for m in found if words in str(m["Subject"]) or words in _text(m)]  # type: ignore[arg-type]


async def test_reply_all_reaches_every_recipient_once_and_a_ccd_answer_is_answered_to_them(
        bridge: Bridge) -> None:
    services = bridge.services
    alice, carol, dave = services.email("alice"), services.email("carol"), outsider(services,
                                                                                      "dave")
    mail = make_mail(f"Alice <{alice}>", services.email("support"), "Offsite plan",
                     "Shall we meet on Thursday?")
    # Copied: Carol, Dave (outside the organisation), Switchboard itself, and Bob, who
    # will answer: only Carol and Dave are copied on his reply to all.
    mail["Cc"] = (f"Carol <{carol}>, {dave}, {services.email('switchboard')}, "
                  f"{services.email('bob')}")
    await send_mail(services, mail)
    card = await card_in(bridge, SLACK_CHANNEL, "Offsite plan")
    shown = str(card["blocks"])
    assert f"*To:* {services.email('support')}" in shown
    assert f"*Cc:* {carol}, {dave}" in shown  # the card shows who else it was written to

    # *Reply all*: the modal says who will receive it, before anything is sent.
    slack = sender(bridge)
    await slack.block_action(BOB, "bob", SLACK_CHANNEL, card, "reply_all",
                             button(card, "reply_all"))
    view = await modal(bridge, "reply_by_email_modal")
    assert view["title"]["text"] == "Reply all by email"
    context = str(view["blocks"][0])
    assert f"*To:* {alice}" in context and f"*Cc:* {carol}, {dave}" in context
    assert services.email("switchboard") not in context and services.email("bob") not in context
    await slack.view_submission(BOB, "bob", view, {"reply": {"text": "Thursday it is."}})
    await bob_told(bridge, f"Sent by email to {alice}, copied to {carol}, {dave}")

    to_alice = await received(services, "alice", "Offsite plan")
    to_carol = await received(services, "carol", "Offsite plan")
    to_dave = await received(services, dave, "Offsite plan")
    # One email, as a mail client writes a reply to all: To the author, Cc the others,
    # threaded onto the original; everyone gets the same message once.
    assert to_alice["Message-ID"] == to_carol["Message-ID"] == to_dave["Message-ID"]
    assert str(to_alice["To"]) == alice
    assert [a.addr_spec for a in to_alice["Cc"].addresses] == [carol, dave]
    cid, _, eid = button(card, "reply_by_email").partition("/")
    original = await bridge.runtime.store.history.entry(cid, eid)
    assert original is not None
    assert to_alice["In-Reply-To"] == original.meta["message_id"]
    assert str(to_alice["References"]).split()[-1] == original.meta["message_id"]
    assert "Bcc" not in to_alice
    for user in ("alice", "carol", dave):
        assert len(messages(await mailbox(services, user), "Thursday it is.")) == 1
    assert not messages(await mailbox(services, "bob"), "Thursday it is.")

    # Carol answers (to the reply address, as her mail client does): into the thread.
    await send_mail(services, answer(to_carol, carol, "Thursday is fine, 10 am?"))

    async def in_thread() -> dict[str, Any] | None:
        return next((m for m in await bridge.slack.messages(SLACK_CHANNEL)
                     if "Thursday is fine, 10 am?" in str(m["blocks"])), None)
    answered = await eventually(in_thread, what="Carol's answer in the thread")
    assert answered["thread_ts"] == card["ts"]
    # Bob's plain reply in the thread (this route sends them by email) answers Carol,
    # the thread's latest writer, not Alice.
    await slack.event({"type": "message", "channel": SLACK_CHANNEL, "channel_type": "channel",
                       "user": BOB, "text": "10 am works.", "ts": f"{time.time():.6f}",
                       "thread_ts": card["ts"]})

    async def carol_has_it() -> bool:
        return bool(messages(await mailbox(services, "carol"), "10 am works."))
    await eventually(carol_has_it, what="Bob's answer at Carol's")
    (to_carol_again,) = messages(await mailbox(services, "carol"), "10 am works.")
    assert str(to_carol_again["To"]) == carol and to_carol_again["Cc"] is None
    assert not messages(await mailbox(services, "alice"), "10 am works.")


async def test_forward_with_a_note_arrives_with_the_original_and_threads_back(
        bridge: Bridge) -> None:
    services = bridge.services
    alice, dave = services.email("alice"), services.email("dave")
    mail = make_mail(f"Alice <{alice}>", services.email("support"), "Invoice 4411 wrong",
                     "The amount on invoice 4411 is twice what we agreed.")
    await send_mail(services, mail)
    card = await card_in(bridge, SLACK_CHANNEL, "Invoice 4411 wrong")
    slack = sender(bridge)
    await slack.block_action(BOB, "bob", SLACK_CHANNEL, card, "forward_email",
                             button(card, "forward_email"))
    view = await modal(bridge, "forward_modal")
    # A typo in the address is refused in the modal itself, and nothing is sent.
    code, body = await slack.view_submission(BOB, "bob", view, {
        "to": {"text": "dave at example"}, "reply": {"text": "Dave, yours?"}})
    assert code == 200 and '"to"' in body
    await slack.view_submission(BOB, "bob", view, {
        "to": {"text": dave}, "reply": {"text": "Dave, can you check this invoice?"}})
    await bob_told(bridge, f"Forwarded by email to {dave}")

    forwarded = await received(services, "dave", "Invoice 4411 wrong")
    assert str(forwarded["Subject"]).startswith("Fwd: Invoice 4411 wrong [sb:")
    text = _text(forwarded)
    assert text.startswith("Dave, can you check this invoice?")
    assert "---------- Forwarded message ----------" in text
    assert f"From: {alice}" in text and "twice what we agreed" in text
    (attached,) = [p for p in forwarded.iter_attachments()
                   if p.get_content_type() == "message/rfc822"]
    inner = attached.get_content()
    assert str(inner["Subject"]) == "Invoice 4411 wrong" and alice in str(inner["From"])
    assert "twice what we agreed" in inner.get_content()
    assert str(forwarded["To"]) == dave and forwarded["Cc"] is None
    assert not messages(await mailbox(services, "alice"), "Invoice 4411 wrong")
    # Kept in the conversation's history, as an email Bob sent to Dave.
    cid = button(card, "reply_by_email").partition("/")[0]
    page = await bridge.runtime.store.history.conversation(cid, 0, 10)
    assert any(e.meta.get("forwarded") and [a.value for a in e.recipients] == [dave]
               for e in page.entries)

    # Dave answers the forward: it comes back into the original email's thread.
    await send_mail(services, answer(forwarded, dave, "Corrected, new invoice sent."))

    async def back() -> dict[str, Any] | None:
        return next((m for m in await bridge.slack.messages(SLACK_CHANNEL)
                     if "Corrected, new invoice sent." in str(m["blocks"])), None)
    answered = await eventually(back, what="Dave's answer in the thread")
    assert answered["thread_ts"] == card["ts"]


async def admin_says(bridge: Bridge, text: str, channel: str = SLACK_CHANNEL) -> str:
    before = len((await bridge.slack.state())["responses"])
    code, _ = await sender(bridge).slash_command(DANA, "dana", channel, text)
    assert code == 200

    async def said() -> str | None:
        responses = (await bridge.slack.state())["responses"]
        return "\n".join(b["text"]["text"] for b in responses[-1].get("blocks", [])
                         if b["type"] == "section") if len(responses) > before else None
    return await eventually(said, what=f"the answer to /switchboard {text}")


async def test_a_blocked_sender_is_not_posted_nor_bounced_and_is_counted(
        bridge: Bridge) -> None:
    services = bridge.services
    spammer = outsider(services, "carol")
    await clear_mailbox(services, spammer)
    await send_mail(services, make_mail(f"Deals <{spammer}>", services.email("support"),
                                        "Cheap watches", "Buy now"))
    card = await card_in(bridge, SLACK_CHANNEL, "Cheap watches")
    slack = sender(bridge)
    # A plain member may not block; the channel's admin may (after Slack's confirmation).
    await slack.block_action(BOB, "bob", SLACK_CHANNEL, card, "block_sender",
                             button(card, "block_sender"))
    await bob_told(bridge, "Not allowed")
    await slack.block_action(DANA, "dana", SLACK_CHANNEL, card, "block_sender",
                             button(card, "block_sender"))

    async def blocked() -> str | None:
        said = await admin_says(bridge, "block list")
        return said if spammer in said else None
    listed = await eventually(blocked, what="the block listed")
    assert "0 emails stopped" in listed

    await send_mail(services, make_mail(f"Deals <{spammer}>", services.email("support"),
                                        "Cheaper watches", "Buy more"))
    # Something after it is posted: so the blocked one was read, and dropped.
    await send_mail(services, make_mail(f"Alice <{services.email('alice')}>",
                                        services.email("support"), "After the spam", "Hi"))
    await card_in(bridge, SLACK_CHANNEL, "After the spam")
    assert "Cheaper watches" not in str(await bridge.slack.messages(SLACK_CHANNEL))
    status = await admin_says(bridge, "status")
    assert "Blocked senders and domains here: 1, 1 email stopped" in status
    assert f"{spammer} on {services.email('support')}: 1 email stopped" in status
    assert not await mailbox(services, spammer)  # nothing told them (no bounce)

    # Unblocked: the next one is posted again.
    assert "Unblocked" in await admin_says(bridge, f"unblock {spammer}")
    await send_mail(services, make_mail(f"Deals <{spammer}>", services.email("support"),
                                        "Watches again", "Buy"))
    await card_in(bridge, SLACK_CHANNEL, "Watches again")


async def test_plus_addresses_and_automatic_replies(bridge: Bridge) -> None:
    services = bridge.services
    alice = services.email("alice")
    local, _, domain = services.email("support").partition("@")
    # support+billing@ is support@'s route, its tag on the card.
    await send_mail(services, make_mail(f"Alice <{alice}>", f"{local}+billing@{domain}",
                                        "Tagged mail", "For billing."))
    card = await card_in(bridge, SLACK_CHANNEL, "Tagged mail")
    assert "*Tag:* billing" in str(card["blocks"])

    # sales@ answers automatically: once per sender and period, threaded, marked.
    await send_mail(services, make_mail(f"Alice <{alice}>", services.email("sales"),
                                        "First question", "Hello?"))
    await card_in(bridge, SALES, "First question")
    auto = await received(services, "alice", "First question")
    assert auto["Auto-Submitted"] == "auto-replied"
    assert _text(auto).startswith(AUTOREPLY)
    assert str(auto["From"]).startswith("Sales <")
    await send_mail(services, make_mail(f"Alice <{alice}>", services.email("sales"),
                                        "Second question", "And this?"))
    await card_in(bridge, SALES, "Second question")
    # Never to a list's mail, nor to automatic mail.
    listed = make_mail(f"News <{services.email('carol')}>", services.email("sales"),
                       "List digest", "Weekly news")
    listed["List-Id"] = "<news.lists.example>"
    await send_mail(services, listed)
    robot = make_mail(f"Robot <{services.email('dave')}>", services.email("sales"),
                      "Out of office", "I am away")
    robot["Auto-Submitted"] = "auto-replied"
    await send_mail(services, robot)
    await card_in(bridge, SALES, "List digest")
    # Posted after the others: every automatic reply they could have caused was sent.
    await send_mail(services, make_mail(f"Alice <{alice}>", services.email("support"),
                                        "Last one", "Done"))
    await card_in(bridge, SLACK_CHANNEL, "Last one")
    autos = [m for m in messages(await mailbox(services, "alice"), "")
             if m["Auto-Submitted"] == "auto-replied"]
    assert len(autos) == 1  # the second question got none: once per period
    assert not [m for m in messages(await mailbox(services, "carol"), "")
                if m["Auto-Submitted"]]
    assert not [m for m in messages(await mailbox(services, "dave"), "")
                if m["Auto-Submitted"]]
