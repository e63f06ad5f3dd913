"""Reply in chat, every branch, against the real services: Bob answers Alice's email from
Slack (signed requests to Switchboard's endpoint) or Matrix (`!sb im`), and Alice gets
it wherever she is, or Bob chooses what happens."""

from __future__ import annotations

import asyncio
import contextlib
import email
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from email import policy
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bot.model import Address, DeliveryState, Provenance
from tests.bridge import SLACK_CHANNEL, SLACK_PEOPLE, Bridge, running_bridge
from tests.conftest import Services
from tests.mailhelp import (
    MatrixUser,
    clear_mailbox,
    eventually,
    mailbox,
    make_mail,
    send_mail,
)
from tests.servers import start_switchboard
from tests.slackapi.client import SlackControl, SlackSender, SocketSender

pytestmark = pytest.mark.integration

BIN = Path(sys.executable).parent
BOB = SLACK_PEOPLE["bob"]


@pytest.fixture
async def bridge(services: Services, slack: SlackControl, http: aiohttp.ClientSession
                 ) -> AsyncIterator[Bridge]:
    async with running_bridge(services, slack, http, SWITCHBOARD_RETRY_INTERVAL="1",
                              SWITCHBOARD_RETRY_DEADLINE="3600") as running:
        yield running


def sender(bridge: Bridge) -> SlackSender:
    """What Slack sends Switchboard: signed HTTP requests, or Socket Mode envelopes when the
    bridge runs in Socket Mode."""
    if "SWITCHBOARD_SLACK_APP_TOKEN" in bridge.env:
        return SocketSender(bridge.slack, bridge.team)
    port = bridge.settings.http_listen[1]
    return SlackSender(f"http://127.0.0.1:{port}/slack/events", bridge.env[
        "SWITCHBOARD_SLACK_SIGNING_SECRET"], bridge.slack, bridge.team)


async def email_card(bridge: Bridge, sender_address: str, subject: str,
                     body: str = "Can you check the numbers?") -> dict[str, Any]:
    mail = make_mail(sender_address, bridge.services.email("support"), subject, body)
    await send_mail(bridge.services, mail)

    async def card() -> dict[str, Any] | None:
        return next((m for m in await bridge.slack_posts() if subject in str(m["blocks"])), None)

    return await eventually(card, what=f"the card of {subject!r}")


def button(message: dict[str, Any], action: str) -> str:
    return next(e["value"] for b in message["blocks"] if b["type"] == "actions"
                for e in b["elements"] if e["action_id"] == action)


async def reply_from_slack(bridge: Bridge, card: dict[str, Any], text: str) -> None:
    """Bob clicks *Reply in chat*, the modal opens, Bob types and sends."""
    slack = sender(bridge)
    status, _ = await slack.block_action(BOB, "bob", SLACK_CHANNEL, card, "reply_in_chat",
                                         button(card, "reply_in_chat"))
    assert status == 200

    async def modal() -> dict[str, Any] | None:
        views = (await bridge.slack.state())["views"]
        return views[-1] if views else None

    view = await eventually(modal, what="the reply modal")
    assert view["callback_id"] == "reply_in_chat_modal"
    status, body = await slack.view_submission(BOB, "bob", view, {"reply": {"text": text}})
    assert status == 200 and body == ""


async def bob_told(bridge: Bridge, words: str, earlier: int = 0) -> dict[str, Any]:
    """The notice to Bob saying ``words`` (after ``earlier`` others saying it)."""
    async def notice() -> dict[str, Any] | None:
        state = await bridge.slack.state()
        found = [m for m in state["messages"]
                 if m["ephemeral_to"] == BOB and words in str(m["blocks"])]
        found += [r for r in state["responses"]
                  if words in str(r.get("blocks", "")) or words in r.get("text", "")]
        return found[earlier] if len(found) > earlier else None

    return await eventually(notice, what=f"Bob to be told {words!r}")


async def slack_dm(bridge: Bridge, user: str) -> list[dict[str, Any]]:
    state = await bridge.slack.state()
    channels = {c["id"] for c in state["channels"] if c["is_im"] and c["members"] == [user]}
    return [m for m in state["messages"] if m["channel"] in channels]


async def set_matrix_presence(user: MatrixUser, presence: str) -> None:
    await user.call("PUT", f"/presence/{user.user_id}/status", {"presence": presence})


async def matrix_dm(user: MatrixUser, containing: str) -> list[dict[str, Any]]:
    """Accepts the bot's DM invitation(s) and returns the replies there with that text."""
    data = await user.call("GET", "/sync?timeout=0&set_presence=offline")
    for room in data.get("rooms", {}).get("invite", {}):
        await user.join(room)
    data = await user.call("GET", "/joined_rooms")
    found = []
    for room in data["joined_rooms"]:
        found += [e for e in await user.messages(room)
                  if "replied in chat" in e["content"].get("body", "")
                  and containing in e["content"].get("body", "")]
    return found


async def queued_while_away(bridge: Bridge, subject: str, text: str, earlier: int = 0
                            ) -> str:
    """Alice is away on Slack; Bob answers her email in chat and chooses *Queue and
    retry*. The delivery's id. ``earlier``: how many such notices Bob was given before."""
    await bridge.slack.add_user(SLACK_PEOPLE["alice"], "alice", bridge.services.email("alice"),
                                "away")
    card = await email_card(bridge, bridge.services.email("alice"), subject)
    await reply_from_slack(bridge, card, text)
    notice = await bob_told(bridge, "is away on Slack", earlier)
    delivery_id = button(notice, "delivery_queue")
    await sender(bridge).block_action(BOB, "bob", SLACK_CHANNEL, notice, "delivery_queue",
                                      delivery_id, ephemeral=True)
    return delivery_id


async def test_available_on_the_same_network(bridge: Bridge) -> None:
    alice = Address.email(bridge.services.email("alice"))
    await bridge.slack.add_user(SLACK_PEOPLE["alice"], "alice", alice.value, "active")
    card = await email_card(bridge, f"Alice <{alice.value}>", "Numbers for Q3")
    await reply_from_slack(bridge, card, "Thanks Alice, they look right.")
    (dm,) = await eventually(lambda: slack_dm(bridge, SLACK_PEOPLE["alice"]), what="Alice's DM")
    text = str(dm["blocks"])
    assert "bob replied in chat to the email" in text and "Numbers for Q3" in text
    assert "Thanks Alice, they look right." in text
    assert "Can you check the numbers?" in text  # the history travels with it
    assert {e["action_id"] for b in dm["blocks"] if b["type"] == "actions"
            for e in b["elements"]} == {"reply_in_chat", "reply_by_email"}
    await bob_told(bridge, "reached alice")
    # learned from Slack's users.lookupByEmail and kept
    identity = await bridge.runtime.store.address_book.resolve(alice)
    assert identity is not None
    learned = identity.mapping(Address.slack(bridge.team, SLACK_PEOPLE["alice"]))
    assert learned is not None and learned.provenance is Provenance.LEARNED
    # both parties' history has the reply
    for who in (alice, Address.slack(bridge.team, BOB)):
        entries = (await bridge.runtime.store.history.person([who])).entries
        assert entries[0].text == "Thanks Alice, they look right."


async def test_available_on_the_other_network(bridge: Bridge) -> None:
    """Bob on Slack answers; Alice is only on Matrix (found through the homeserver)."""
    alice_email = bridge.services.email("alice")
    # Slack's alice signed up with another address: Slack does not know this one.
    await bridge.slack.add_user(SLACK_PEOPLE["alice"], "alice", "alice@elsewhere.test")
    await set_matrix_presence(bridge.alice, "online")
    card = await email_card(bridge, alice_email, "Cross-network")
    text = f"Replying from Slack to Matrix {uuid.uuid4().hex[:8]}"
    await reply_from_slack(bridge, card, text)
    # (Alice's client below syncs, which would change her presence: look after the fact.)
    await bob_told(bridge, "reached alice@switchboard.test in their Matrix direct messages")
    (dm,) = await eventually(lambda: matrix_dm(bridge.alice, text), what="Alice's Matrix DM")
    assert "Can you check the numbers?" in dm["content"]["body"]
    assert f"<blockquote>{text}</blockquote>" in dm["content"]["formatted_body"]


async def test_away_then_queued_then_delivered(bridge: Bridge, tmp_path: Path) -> None:
    delivery_id = await queued_while_away(bridge, "While away", "See you when you are back")
    await bob_told(bridge, "Queued")
    worker = start_worker(bridge, tmp_path / "worker.log")
    try:
        await eventually(lambda: _attempts(bridge, delivery_id, 2), what="a retry while away")
        assert await slack_dm(bridge, SLACK_PEOPLE["alice"]) == []
        await bridge.slack.set_presence(SLACK_PEOPLE["alice"], "active")
        (dm,) = await eventually(lambda: slack_dm(bridge, SLACK_PEOPLE["alice"]),
                                 what="delivery once Alice is back")
        assert "See you when you are back" in str(dm["blocks"])
        await bob_told(bridge, "is back")
    finally:
        stop_worker(worker)
    delivery = await bridge.runtime.store.deliveries.get(delivery_id)
    assert delivery is not None and delivery.state is DeliveryState.DELIVERED
    states = [c.state for c in delivery.changes]
    assert states[0] is DeliveryState.PENDING and states[-1] is DeliveryState.DELIVERED
    assert DeliveryState.QUEUED in states


async def test_away_then_cancelled(bridge: Bridge) -> None:
    await bridge.slack.add_user(SLACK_PEOPLE["alice"], "alice", bridge.services.email("alice"),
                                "away")
    card = await email_card(bridge, bridge.services.email("alice"), "Never mind")
    await reply_from_slack(bridge, card, "Forget it")
    notice = await bob_told(bridge, "is away on Slack")
    delivery_id = button(notice, "delivery_cancel")
    await sender(bridge).block_action(BOB, "bob", SLACK_CHANNEL, notice, "delivery_cancel",
                                      delivery_id, ephemeral=True)
    await bob_told(bridge, "Cancelled")
    delivery = await bridge.runtime.store.deliveries.get(delivery_id)
    assert delivery is not None and delivery.state is DeliveryState.CANCELLED
    # a second click changes nothing
    await sender(bridge).block_action(BOB, "bob", SLACK_CHANNEL, notice, "delivery_queue",
                                      delivery_id, ephemeral=True)
    await bob_told(bridge, "already handled")
    assert await slack_dm(bridge, SLACK_PEOPLE["alice"]) == []


async def test_away_then_sent_as_email(bridge: Bridge) -> None:
    services = bridge.services
    await clear_mailbox(services, "alice")
    await bridge.slack.add_user(SLACK_PEOPLE["alice"], "alice", services.email("alice"), "away")
    original = make_mail(f"Alice <{services.email('alice')}>", services.email("support"),
                         "Invoice 77", "Is invoice 77 paid?")
    await send_mail(services, original)

    async def card() -> dict[str, Any] | None:
        return next((m for m in await bridge.slack_posts() if "Invoice 77" in str(m["blocks"])),
                    None)

    post = await eventually(card, what="the card")
    await reply_from_slack(bridge, post, "Yes, paid on Monday.")
    notice = await bob_told(bridge, "is away on Slack")
    delivery_id = button(notice, "delivery_sendmail")
    await sender(bridge).block_action(BOB, "bob", SLACK_CHANNEL, notice, "delivery_sendmail",
                                      delivery_id, ephemeral=True)
    await bob_told(bridge, "Sent by email")
    (raw,) = await eventually(lambda: mailbox(services, "alice"), what="the email at Alice's")
    msg = email.message_from_bytes(raw, policy=policy.default)
    assert msg["To"] == services.email("alice")
    assert msg["From"] == f"bob via Switchboard <{services.email('switchboard')}>"
    assert str(msg["Reply-To"]).startswith("bob <reply+")
    assert str(msg["Subject"]).startswith("Re: Invoice 77 [sb:")
    assert msg["In-Reply-To"] == original["Message-ID"]
    assert original["Message-ID"] in str(msg["References"])
    assert msg["Auto-Submitted"] is None  # a person's reply, not an automatic one
    assert msg["X-Switchboard"] == f"{delivery_id}; via={services.email('switchboard')}"
    text = msg.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert text.startswith("Yes, paid on Monday.")
    assert "> Is invoice 77 paid?" in text
    html = msg.get_body(("html",)).get_content()  # type: ignore[union-attr]
    assert "Yes, paid on Monday." in html
    delivery = await bridge.runtime.store.deliveries.get(delivery_id)
    assert delivery is not None and delivery.state is DeliveryState.EMAILED


async def test_no_chat_address_offers_email(bridge: Bridge) -> None:
    card = await email_card(bridge, "dave@partner.test", "From outside")
    await reply_from_slack(bridge, card, "Hello Dave")
    notice = await bob_told(bridge, "has no chat account")
    actions = {e["action_id"] for b in notice["blocks"] if b["type"] == "actions"
               for e in b["elements"]}
    assert actions == {"delivery_sendmail", "delivery_cancel"}


async def test_double_submission_delivers_once(bridge: Bridge) -> None:
    await bridge.slack.add_user(SLACK_PEOPLE["alice"], "alice", bridge.services.email("alice"))
    card = await email_card(bridge, bridge.services.email("alice"), "Twice")
    slack = sender(bridge)
    await slack.block_action(BOB, "bob", SLACK_CHANNEL, card, "reply_in_chat",
                             button(card, "reply_in_chat"))
    view = await eventually(lambda: _last_view(bridge), what="the modal")
    values = {"reply": {"text": "only once please"}}
    await asyncio.gather(*(slack.view_submission(BOB, "bob", view, values) for _ in range(3)))
    await eventually(lambda: slack_dm(bridge, SLACK_PEOPLE["alice"]), what="the DM")
    await asyncio.sleep(1.0)
    assert len(await slack_dm(bridge, SLACK_PEOPLE["alice"])) == 1


async def test_matrix_user_replies_with_im_in_the_thread(bridge: Bridge) -> None:
    """Alice (Matrix) answers Bob's email in the sales room; Bob is on Slack."""
    services = bridge.services
    await bridge.slack.add_user(BOB, "bob", services.email("bob"), "active")
    mail = make_mail(services.email("bob"), services.email("sales"), "Room question",
                     "Anyone there?")
    await send_mail(services, mail)
    (post,) = await eventually(bridge.room_posts, what="the Matrix post")
    await bridge.alice.call("PUT", f"/rooms/{bridge.room}/send/m.room.message/t1", {
        "msgtype": "m.text", "body": "!sb im Yes, I am here",
        "m.relates_to": {"rel_type": "m.thread", "event_id": post["event_id"]}})
    (dm,) = await eventually(lambda: slack_dm(bridge, BOB), what="Bob's Slack DM")
    assert "Yes, I am here" in str(dm["blocks"])

    async def notice() -> list[dict[str, Any]]:
        return [e for e in await bridge.alice.messages(bridge.room)
                if e["content"].get("msgtype") == "m.notice"
                and "reached" in e["content"]["body"]]

    (told,) = await eventually(notice, what="Alice's confirmation in the thread")
    assert told["content"]["m.relates_to"]["event_id"] == post["event_id"]


async def test_worker_killed_during_queued_retry(bridge: Bridge, tmp_path: Path) -> None:
    delivery_id = await queued_while_away(bridge, "Kill the worker", "Exactly once, please")
    log = tmp_path / "worker.log"
    first = start_worker(bridge, log)
    await eventually(lambda: _attempts(bridge, delivery_id, 3), what="retries while away")
    os.killpg(first.pid, signal.SIGKILL)
    first.wait(timeout=10)
    await bridge.slack.set_presence(SLACK_PEOPLE["alice"], "active")
    second = start_worker(bridge, log)
    try:
        await eventually(lambda: slack_dm(bridge, SLACK_PEOPLE["alice"]), within=60,
                         what="delivery by the second worker")
        await asyncio.sleep(2.0)
        assert len(await slack_dm(bridge, SLACK_PEOPLE["alice"])) == 1
    finally:
        stop_worker(second)
    delivery = await bridge.runtime.store.deliveries.get(delivery_id)
    assert delivery is not None and delivery.state is DeliveryState.DELIVERED
    assert [c.state for c in delivery.changes].count(DeliveryState.DELIVERED) == 1


async def test_worker_killed_while_sending_is_taken_over_quickly(bridge: Bridge,
                                                                 tmp_path: Path) -> None:
    """A worker SIGKILLed in the middle of posting the DM holds the delivery's claim; it
    stops renewing it, so another worker takes over within seconds (the claim lived two
    minutes before), and the DM arrives once."""
    alice = SLACK_PEOPLE["alice"]
    delivery_id = await queued_while_away(bridge, "Killed mid-send", "Once, even so")
    await bridge.slack.slow("chat.postMessage", 50.0, times=1)  # the DM's post hangs
    await bridge.slack.set_presence(alice, "active")
    log = tmp_path / "worker.log"
    first = start_worker(bridge, log)
    store = bridge.runtime.store

    async def sending() -> bool:
        # The claim is held, and the DM's post is the one Slack is holding back.
        slowed = (await bridge.slack.state())["slow"].get("chat.postMessage", [1])
        return bool(await store.redis.exists(store.keys.claim(delivery_id))) and slowed[0] == 0

    await eventually(sending, within=30, what="the first worker posting the DM")
    # RQ runs the job in a work-horse in a session of its own: kill the whole tree.
    kill_tree(first.pid)
    first.wait(timeout=10)
    second = start_worker(bridge, log)
    try:
        await eventually(lambda: slack_dm(bridge, alice), within=45,
                         what="the second worker taking over")
        await asyncio.sleep(2.0)
        assert len(await slack_dm(bridge, alice)) == 1
    finally:
        stop_worker(second)
    delivery = await store.deliveries.get(delivery_id)
    assert delivery is not None and delivery.state is DeliveryState.DELIVERED


def kill_tree(pid: int) -> None:
    """SIGKILL ``pid`` and every process descended from it, whatever their session."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    doomed, todo = [], [pid]
    while todo:
        current = todo.pop()
        doomed.append(current)
        todo += children.get(current, [])
    for victim in doomed:
        with contextlib.suppress(ProcessLookupError):
            os.kill(victim, signal.SIGKILL)


async def _attempts(bridge: Bridge, delivery_id: str, at_least: int) -> bool:
    delivery = await bridge.runtime.store.deliveries.get(delivery_id)
    return delivery is not None and delivery.attempts >= at_least - 1 and \
        len(delivery.changes) >= at_least + 1


async def _last_view(bridge: Bridge) -> dict[str, Any] | None:
    views = (await bridge.slack.state())["views"]
    return views[-1] if views else None


def start_worker(bridge: Bridge, log: Path) -> subprocess.Popen[bytes]:
    return start_switchboard("worker", bridge.env, log, new_session=True)


def stop_worker(worker: subprocess.Popen[bytes]) -> None:
    if worker.poll() is None:
        os.killpg(worker.pid, signal.SIGTERM)
        try:
            worker.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait(timeout=5)


async def test_deadline_asks_bob_again(services: Services, slack: SlackControl,
                                       http: aiohttp.ClientSession, tmp_path: Path) -> None:
    async with running_bridge(services, slack, http, SWITCHBOARD_RETRY_INTERVAL="1",
                              SWITCHBOARD_RETRY_DEADLINE="2") as bridge:
        await slack.add_user(SLACK_PEOPLE["alice"], "alice", services.email("alice"), "away")
        card = await email_card(bridge, services.email("alice"), "Deadline")
        await reply_from_slack(bridge, card, "Are you there?")
        notice = await bob_told(bridge, "is away on Slack")
        delivery_id = button(notice, "delivery_queue")
        await sender(bridge).block_action(BOB, "bob", SLACK_CHANNEL, notice, "delivery_queue",
                                          delivery_id, ephemeral=True)
        worker = start_worker(bridge, tmp_path / "worker.log")
        try:
            again = await bob_told(bridge, "did not come back in time")
        finally:
            stop_worker(worker)
        assert {e["action_id"] for b in again["blocks"] if b["type"] == "actions"
                for e in b["elements"]} == {"delivery_queue", "delivery_sendmail",
                                            "delivery_cancel"}
        delivery = await bridge.runtime.store.deliveries.get(delivery_id)
        assert delivery is not None and delivery.state is DeliveryState.FAILED
        assert await slack_dm(bridge, SLACK_PEOPLE["alice"]) == []


async def test_rate_limited_delivery_arrives_once(bridge: Bridge) -> None:
    await bridge.slack.add_user(SLACK_PEOPLE["alice"], "alice", bridge.services.email("alice"))
    card = await email_card(bridge, bridge.services.email("alice"), "Busy Slack")
    await bridge.slack.rate_limit("chat.postMessage", times=2, retry_after=1)
    await reply_from_slack(bridge, card, "Through the rate limit")
    await bob_told(bridge, "reached alice")
    dms = await slack_dm(bridge, SLACK_PEOPLE["alice"])
    assert len(dms) == 1 and "Through the rate limit" in str(dms[0]["blocks"])
