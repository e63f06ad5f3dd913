"""Email into chat, end to end: SMTP -> Postfix -> Dovecot -> IMAP IDLE ingest -> the local
Slack server and Synapse, read back where a user would see it."""

from __future__ import annotations

import email
import json
import os
import sys
from collections.abc import AsyncIterator
from email import policy
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bot.model import Address, Provenance
from tests.bridge import SLACK_CHANNEL, SLACK_PEOPLE, Bridge, running_bridge
from tests.conftest import Services
from tests.mailhelp import eventually, mailbox, make_mail, send_mail, send_raw
from tests.servers import run_cli
from tests.slackapi.client import SlackControl

pytestmark = pytest.mark.integration

BIN = Path(sys.executable).parent
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "mail"
PDF = b"%PDF-1.4 quarterly report\n" * 40


@pytest.fixture
async def bridge(services: Services, slack: SlackControl,
                 http: aiohttp.ClientSession) -> AsyncIterator[Bridge]:
    async with running_bridge(services, slack, http) as running:
        yield running


def block_text(message: dict[str, Any]) -> str:
    parts = []
    for block in message["blocks"]:
        if block["type"] == "section":
            parts.append(block["text"]["text"])
        elif block["type"] == "context":
            parts += [e["text"] for e in block["elements"]]
    return "\n".join(parts)


def buttons(message: dict[str, Any]) -> dict[str, str]:
    return {e["action_id"]: e["value"] for b in message["blocks"] if b["type"] == "actions"
            for e in b["elements"]}


async def test_email_appears_in_slack_with_attachments_and_actions(bridge: Bridge) -> None:
    services = bridge.services
    mail = make_mail("Alice Example <alice@partner.test>", services.email("support"),
                     "Quarterly numbers", "Hi team,\n\nplease check the report.\n\nAlice",
                     attachments=(("report.pdf", PDF),))
    await send_mail(services, mail)
    (post,) = await eventually(bridge.slack_posts, what="the Slack post")
    text = block_text(post)
    assert "*From:* Alice Example &lt;alice@partner.test&gt;" in text
    assert "*Subject:* Quarterly numbers" in text
    assert "please check the report." in text
    assert "report.pdf (1.0 kB)" in text
    assert set(buttons(post)) == {"reply_in_chat", "reply_by_email", "reply_all",
                                  "forward_email", "block_sender", "block_domain"}
    (upload,) = await eventually(bridge.slack_files, what="the attachment in the thread")
    assert upload["thread_ts"] == post["ts"]
    assert upload["files"][0]["name"] == "report.pdf"
    assert await bridge.slack.file_content(upload["files"][0]["id"]) == PDF


async def test_email_appears_in_the_matrix_room_as_a_thread_root(bridge: Bridge) -> None:
    services = bridge.services
    mail = make_mail("Bob Partner <bob@partner.test>", services.email("sales"),
                     "Order <42> & more", "Please send <b>two</b> crates.\n\n@room look",
                     attachments=(("order.pdf", PDF),))
    await send_mail(services, mail)
    (post,) = await eventually(bridge.room_posts, what="the Matrix post")
    content = post["content"]
    assert content["format"] == "org.matrix.custom.html"
    assert "Bob Partner <bob@partner.test>" in content["body"]
    assert "Subject: Order <42> & more" in content["body"]
    html = content["formatted_body"]
    assert "Order &lt;42&gt; &amp; more" in html
    assert "&lt;b&gt;two&lt;/b&gt;" in html and "<b>two</b>" not in html
    assert "@room" not in content["body"] and content["m.mentions"] == {}
    assert "!sb im" in content["body"] and "!sb email" in content["body"]

    async def the_file() -> list[dict[str, Any]]:
        return [e for e in await bridge.alice.messages(bridge.room)
                if e["content"].get("msgtype") == "m.file"]

    (attachment,) = await eventually(the_file, what="the attachment event")
    assert attachment["content"]["m.relates_to"]["rel_type"] == "m.thread"
    assert attachment["content"]["m.relates_to"]["event_id"] == post["event_id"]
    assert await bridge.alice.download(attachment["content"]["url"]) == PDF


async def test_a_reply_email_lands_in_the_same_thread(bridge: Bridge) -> None:
    services = bridge.services
    first = make_mail("alice@partner.test", services.email("support"), "Question", "Is it?")
    await send_mail(services, first)
    (root,) = await eventually(bridge.slack_posts, what="the first post")
    reply = make_mail("bob@partner.test", services.email("support"), "Re: Question",
                      "Yes it is.\n\nOn Mon, Alice wrote:\n> Is it?",
                      in_reply_to=str(first["Message-ID"]))
    await send_mail(services, reply)

    async def two() -> list[dict[str, Any]] | None:
        posts = await bridge.slack_posts()
        return posts if len(posts) == 2 else None

    _, answer = await eventually(two, what="the reply post")
    assert answer["thread_ts"] == root["ts"]
    text = block_text(answer)
    assert "Yes it is." in text and "> Is it?" not in text
    assert "2 quoted lines folded away" in text
    history = await bridge.runtime.store.history.person([Address.email("bob@partner.test")])
    assert [e.text for e in history.entries] == ["Yes it is."]
    assert "> Is it?" in history.entries[0].meta["quoted"]


async def test_a_burst_is_posted_complete_and_each_conversation_in_order(bridge: Bridge
                                                                         ) -> None:
    """Emails of different conversations are bridged side by side; the emails of one
    conversation reach chat in the order the mailbox received them."""
    services = bridge.services
    previous = None
    chain = []
    for i in range(50):
        if i % 5 == 0:  # every fifth email is the next answer in one conversation
            msg = make_mail("bob@partner.test", services.email("support"),
                            f"thread {i:02d}", f"answer number {i}", in_reply_to=previous)
            previous = msg["Message-ID"]
            chain.append(f"thread {i:02d}")
        else:
            msg = make_mail("alice@partner.test", services.email("support"),
                            f"burst {i:02d}", f"message number {i}")
        await send_mail(services, msg)

    async def all_posted() -> list[dict[str, Any]] | None:
        posts = await bridge.slack_posts()
        return posts if len(posts) >= 50 else None

    posts = await eventually(all_posted, within=60, what="50 posts")
    subjects = [block_text(p).split("*Subject:* ")[1].split("\n")[0] for p in posts]
    assert sorted(subjects) == sorted([f"burst {i:02d}" for i in range(50) if i % 5]
                                      + chain)  # complete, once each
    # The conversation in order: the order the mailbox received its emails in (the MTA
    # may deliver a burst slightly out of sending order; IMAP UIDs record arrival).
    arrived = [str(email.message_from_bytes(raw, policy=policy.default)["Subject"])
               for raw in await mailbox(services, "switchboard")]
    assert [s for s in subjects if s.startswith("thread")] == \
        [s for s in arrived if s.startswith("thread")]
    if [s for s in arrived if s.startswith("thread")] == chain:
        # Each answer arrived after what it answers: all of them are in the first's thread.
        root = next(p for p in posts if "*Subject:* thread 00" in block_text(p))
        replies = [p for p in posts if "*Subject:* thread" in block_text(p) and p is not root]
        assert len(replies) == 9 and all(p.get("thread_ts") == root["ts"] for p in replies)


async def test_personal_mail_goes_to_the_persons_dm(bridge: Bridge) -> None:
    """Mail for a person known in the address book reaches their Slack DM (here through
    Switchboard's own SMTP listener, as for a domain pointed at Switchboard)."""
    services = bridge.services
    carol = Address.email(services.email("carol"))
    book = bridge.runtime.store.address_book
    await book.link(carol, provenance=Provenance.IMPORTED, verified=True)
    await book.link(Address.slack(bridge.team, SLACK_PEOPLE["carol"]),
                    provenance=Provenance.LEARNED, verified=True, to=carol)
    mail = make_mail("dave@partner.test", services.email("carol"), "For Carol", "Hello Carol")
    await send_mail(services, mail, port=bridge.listener_port)
    state = await bridge.slack.state()
    dm = await eventually(lambda: _dm_posts(bridge, SLACK_PEOPLE["carol"]), what="Carol's DM")
    assert "Hello Carol" in block_text(dm[0])
    assert not [m for m in state["messages"] if m["channel"] == SLACK_CHANNEL]


async def _dm_posts(bridge: Bridge, user: str) -> list[dict[str, Any]]:
    state = await bridge.slack.state()
    channels = {c["id"] for c in state["channels"] if c["is_im"] and user in c["members"]}
    return [m for m in state["messages"] if m["channel"] in channels and not m["files"]]


async def test_listener_refuses_unknown_recipients_and_oversize(bridge: Bridge) -> None:
    import smtplib

    port = bridge.listener_port
    services = bridge.services
    with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
        await send_raw(services, "x@partner.test", ["nobody@switchboard.test"],
                       b"Subject: x\r\n\r\nhi", port=port)
    code, reason = refused.value.recipients["nobody@switchboard.test"]
    assert code == 550 and b"no such recipient here" in reason
    big = make_mail("x@partner.test", services.email("support"), "big",
                    "x", attachments=(("big.bin", b"\0" * 2_000_000),))
    with pytest.raises(smtplib.SMTPException) as too_big:
        await send_mail(services, big, port=port)
    assert "552" in str(too_big.value)
    assert await bridge.slack_posts() == []


@pytest.mark.parametrize(("fixture", "expect_text", "expect_note"), [
    ("html-only.eml", "Soup & *bread*", None),
    ("latin1.eml", "Schöne Grüße aus München", None),
    ("unknown-charset.eml", "Hello from a client", "unknown character set"),
    ("no-message-id.eml", "This message has no Message-ID header.", None),
    ("truncated.eml", "The first part arrived.", "damaged or incomplete"),
])
async def test_awkward_mail_is_posted_with_notes(bridge: Bridge, fixture: str, expect_text: str,
                                                 expect_note: str | None) -> None:
    raw = (FIXTURES / fixture).read_bytes()
    await send_raw(bridge.services, "sender@partner.test", [bridge.services.email("support")],
                   raw)
    (post,) = await eventually(bridge.slack_posts, what=f"the post of {fixture}")
    text = block_text(post).replace("&amp;", "&")
    assert expect_text in text
    if expect_note:
        assert expect_note in text


async def test_encoded_subject_and_oversized_attachment(bridge: Bridge) -> None:
    services = bridge.services
    mail = make_mail("alice@partner.test", services.email("support"), "Grüße — Überblick",
                     "see the file", attachments=(("huge.bin", b"\1" * 10_000_000),))
    await send_mail(services, mail)
    (post,) = await eventually(bridge.slack_posts, what="the post")
    text = block_text(post)
    assert "*Subject:* Grüße — Überblick" in text
    assert "huge.bin (10.0 MB, not posted)" in text
    assert "over the 5.0 MB limit" in text
    assert await bridge.slack_files() == []


async def test_unroutable_mail_is_refused_with_a_reason(bridge: Bridge) -> None:
    services = bridge.services
    mail = make_mail("alice@partner.test", services.email("switchboard"), "lost", "to nobody")
    await send_mail(services, mail)

    async def refused() -> list[Any]:
        return await bridge.runtime.store.ingest.refusals()

    (refusal,) = await eventually(refused, what="the refusal record")
    assert refusal.subject == "lost" and "no route" in refusal.reason
    env = {**os.environ, **bridge.env, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    code, out, _ = await run_cli("pending", env=env)
    assert code == 0
    assert "Refused emails (1):" in out and "'lost': no route" in out


async def test_slack_rate_limit_is_waited_out(bridge: Bridge) -> None:
    await bridge.slack.rate_limit("chat.postMessage", times=2, retry_after=1)
    services = bridge.services
    await send_mail(services, make_mail("alice@partner.test", services.email("support"),
                                        "patience", "after the limit"))
    (post,) = await eventually(bridge.slack_posts, what="the post after the 429s")
    assert "after the limit" in block_text(post)
    calls = [c for c in (await bridge.slack.state())["calls"] if c[0] == "chat.postMessage"]
    assert len(calls) == 1  # the two 429s never reached the method; one real post
    assert json.dumps(post["blocks"])


@pytest.mark.parametrize(("header", "value", "reason"), [
    ("Auto-Submitted", "auto-replied", "Auto-Submitted: auto-replied"),
    ("Precedence", "bulk", "Precedence: bulk"),
    ("X-Switchboard", "d123; via=switchboard@switchboard.test", "Switchboard's own mail"),
])
async def test_automatic_mail_is_never_bridged(bridge: Bridge, header: str, value: str,
                                               reason: str) -> None:
    services = bridge.services
    mail = make_mail("vacation@partner.test", services.email("support"), "Out of office",
                     "I am away until Monday.")
    mail[header] = value
    await send_mail(services, mail)
    human = make_mail("alice@partner.test", services.email("support"), "A person", "hello")
    await send_mail(services, human)
    (post,) = await eventually(bridge.slack_posts, what="the person's post")
    assert "A person" in block_text(post)
    refusals = await bridge.runtime.store.ingest.refusals()
    assert [r.subject for r in refusals] == ["Out of office"]
    assert reason in refusals[0].reason
    # another Switchboard's relayed human reply is not automatic: it crosses
    relayed = make_mail("bob@partner.test", services.email("support"), "Relayed", "via B")
    relayed["X-Switchboard"] = "d9; via=switchboard@elsewhere.test"
    await send_mail(services, relayed)

    async def two() -> list[dict[str, Any]] | None:
        posts = await bridge.slack_posts()
        return posts if len(posts) == 2 else None

    await eventually(two, what="the relayed reply's post")


async def test_a_flooding_sender_is_rate_limited(services: Services, slack: SlackControl,
                                                 http: aiohttp.ClientSession) -> None:
    async with running_bridge(services, slack, http,
                              SWITCHBOARD_SENDER_RATE="2/3600") as limited:
        for i in range(3):
            await send_mail(services, make_mail("flood@partner.test", services.email("support"),
                                                f"flood {i}", "again"))
        await send_mail(services, make_mail("calm@partner.test", services.email("support"),
                                            "calm", "once"))

        async def settled() -> list[Any] | None:
            # Over the rate, mail to a route is held for the channel's admins to decide on.
            held = await limited.runtime.store.held.waiting()
            return held if held and len(await limited.slack_posts()) == 3 else None

        (refusal,) = await eventually(settled, what="two floods, the calm one, one held")
        # which flood is third depends on the order the mail server delivered them in
        assert refusal.subject.startswith("flood ") and "rate limit" in refusal.reason
        posted = {block_text(p).split("*Subject:* ")[1].split("\n")[0]
                  for p in await limited.slack_posts()}
        assert posted == {"flood 0", "flood 1", "flood 2", "calm"} - {refusal.subject}
