"""Safe by default, tried as an attacker would on the real services: header injection
through every field a person controls, bounces that cannot be aimed at an innocent
address, Authentication-Results look-alikes at our own listener, poison mail that must
not stop a mailbox, and plain answers at every SMTP stage when the store is down."""

from __future__ import annotations

import asyncio
import email
import smtplib
import uuid
from collections.abc import AsyncIterator
from email import policy
from email.message import EmailMessage
from typing import Any

import aiohttp
import pytest

from bot.mail import Envelope
from bot.model import Address, Provenance
from bot.runtime.app import Runtime
from bot.settings import Settings
from bridges.email.imap import ImapIngest
from storage.store import Store
from tests.bridge import SLACK_PEOPLE, Bridge, running_bridge
from tests.conftest import Services
from tests.integration.test_reply_by_email import reply_by_email_from_slack
from tests.integration.test_reply_in_chat import bob_told
from tests.mailhelp import ELSEWHERE, clear_mailbox, eventually, mailbox, make_mail, send_raw
from tests.servers import free_port
from tests.slackapi.client import SlackControl

pytestmark = pytest.mark.integration

BOB = SLACK_PEOPLE["bob"]
INJECTING_SUBJECT = ("Invoice =?UTF-8?Q?=0D=0A?=X-Injected: yes"
                     " =?UTF-8?Q?=0A?=Bcc: dave@switchboard.test")
INJECTING_NAME = "=?UTF-8?Q?=0A?=Bcc: dave@switchboard.test =?UTF-8?Q?=0D=0A?=X-Injected: 1"


@pytest.fixture
async def bridge(services: Services, slack: SlackControl, http: aiohttp.ClientSession
                 ) -> AsyncIterator[Bridge]:
    for user in ("alice", "bob", "carol", "dave"):
        await clear_mailbox(services, user)
    async with running_bridge(services, slack, http) as running:
        yield running


def raw_mail(sender: str, to: str, subject_header: str, body: str,
             extra_headers: str = "") -> bytes:
    """Bytes as an attacker writes them: header values exactly as given."""
    return (f"From: {sender}\r\nTo: {to}\r\nSubject: {subject_header}\r\n"
            f"Message-ID: <{uuid.uuid4().hex}@partner.test>\r\n{extra_headers}"
            f"Content-Type: text/plain; charset=utf-8\r\n\r\n{body}\r\n").encode()


async def messages(services: Services, user: str) -> list[EmailMessage]:
    return [email.message_from_bytes(raw, policy=policy.default)  # type: ignore[misc]
            for raw in await mailbox(services, user)]


async def card_with(bridge: Bridge, text: str) -> dict[str, Any]:
    async def find() -> dict[str, Any] | None:
        return next((m for m in await bridge.slack_posts() if text in str(m["blocks"])), None)
    return await eventually(find, what=f"the card with {text!r}")


async def test_hostile_subject_and_chat_name_inject_no_header(bridge: Bridge) -> None:
    services = bridge.services
    alice = services.email("alice")
    marker = uuid.uuid4().hex[:8]
    await send_raw(services, alice, [services.email("support")],
                   raw_mail(f"Alice <{alice}>", services.email("support"),
                            f"{marker} {INJECTING_SUBJECT}", "Please pay."))
    card = await card_with(bridge, marker)
    # Bob's Slack display name is the attacker's text too.
    await reply_by_email_from_slack(bridge, card, "Paid today.", name=INJECTING_NAME)
    await bob_told(bridge, f"Sent by email to {alice}")

    async def answer() -> EmailMessage | None:
        return next((m for m in await messages(services, "alice")
                     if marker in str(m["Subject"])), None)

    sent = await eventually(answer, what="the reply at alice's")
    names = {k.lower() for k in sent}
    assert "x-injected" not in names and "bcc" not in names
    assert sent["X-Switchboard-Sender"] == f"slack:{bridge.team}/{BOB}"
    for value in (str(sent["Subject"]), str(sent["From"]), str(sent["Reply-To"])):
        assert "\n" not in value and "\r" not in value
    plain = sent.get_body(("plain",))
    assert plain is not None and f"{bridge.team}/{BOB} on Slack" in plain.get_content()
    await asyncio.sleep(1.0)  # give a wrongly added recipient's copy time to land
    assert await mailbox(services, "dave") == []
    events = await bridge.runtime.store.audit.recent(20)
    assert any(e.action == "mail_sent" and e.target == alice and marker in e.detail
               and e.actor == f"slack:{bridge.team}/{BOB}" for e in events)


async def test_bounces_only_to_real_senders_at_a_bounded_rate(bridge: Bridge) -> None:
    services = bridge.services
    carol = services.email("carol")
    to = f"reply+{'b' * 24}@{services.mail_domain}"
    html = "<html><body><a href='http://phish.test'>Reset your password</a></body></html>"
    # Forged: carol never wrote these (they come from elsewhere and fail SPF/DMARC).
    for n in range(4):
        await send_raw(services, carol, [to],
                       raw_mail(carol, to, f"Forged {n} {INJECTING_SUBJECT}", html),
                       source=ELSEWHERE)
    # Genuine mail from carol to a dead reply address: told why, but three times at most.
    for n in range(5):
        await send_raw(services, carol, [to],
                       raw_mail(carol, to, f"Genuine {n} " + "long " * 40, html))

    async def refused() -> bool:
        subjects = [r.subject for r in await bridge.runtime.store.ingest.refusals(50)]
        return sum(s.startswith(("Forged", "Genuine")) for s in subjects) == 9

    await eventually(refused, within=40, what="all nine emails judged")
    await asyncio.sleep(1.0)
    bounces = await messages(services, "carol")
    assert len(bounces) == 3, [str(b["Subject"]) for b in bounces]
    for bounce in bounces:
        subject = str(bounce["Subject"])
        assert subject.startswith("Not delivered: Genuine") and len(subject) <= 80
        assert "Forged" not in subject and "x-injected" not in {k.lower() for k in bounce}
        assert bounce.get_content_type() == "text/plain"
        assert "phish" not in bounce.get_content() and "<a " not in bounce.get_content()


async def test_listener_ignores_authentication_results_look_alikes(
        services: Services, slack: SlackControl, http: aiohttp.ClientSession) -> None:
    async with running_bridge(services, slack, http,
                              SWITCHBOARD_AUTH_TRUSTED_HOSTS="mx.switchboard.test") as bridge:
        alice = services.email("alice")
        await bridge.runtime.store.address_book.link(
            Address.email(alice), provenance=Provenance.IMPORTED, verified=True)
        await bridge.runtime.store.address_book.link(
            Address.slack(bridge.team, SLACK_PEOPLE["alice"]), provenance=Provenance.IMPORTED,
            verified=True, to=Address.email(alice))
        marker = uuid.uuid4().hex[:8]
        claim = ("Authentication-Results: mx.switchboard.test; dkim=pass "
                 "header.d=switchboard.test; spf=pass smtp.mailfrom=switchboard.test; "
                 "dmarc=pass header.from=switchboard.test\r\n")
        data = raw_mail(f"Alice <{alice}>", services.email("support"), f"Wire {marker}",
                        "Please wire 10,000 EUR.", extra_headers=claim)
        await send_raw(services, alice, [services.email("support")], data,
                       port=bridge.listener_port, source=ELSEWHERE)
        shown = str((await card_with(bridge, marker))["blocks"])
        assert "Unverified sender" in shown
        assert f"<@{SLACK_PEOPLE['alice']}>" not in shown


def smtp_dialogue(port: int, rcpt: str) -> tuple[tuple[int, bytes], tuple[int, bytes]]:
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as smtp:
        smtp.ehlo()
        mail = smtp.mail("someone@partner.test")
        return mail, smtp.rcpt(rcpt)


async def test_store_outage_answers_try_later_without_internals(services: Services) -> None:
    """Redis unreachable: a personal address gets a 4xx with a plain reason at RCPT."""
    port = free_port()
    env = {k: v for k, v in services.env.items() if k.startswith("SWITCHBOARD_")
           and not k.startswith(("SWITCHBOARD_IMAP", "SWITCHBOARD_MATRIX"))}
    env.update(SWITCHBOARD_REDIS_URL=f"redis://127.0.0.1:{free_port()}/0",
               SWITCHBOARD_SMTP_LISTEN=f"127.0.0.1:{port}",
               SWITCHBOARD_HTTP_LISTEN=f"127.0.0.1:{free_port()}", SWITCHBOARD_ROUTES="")
    runtime = await Runtime.start(Settings.load(env))
    stop = asyncio.Event()
    serving = asyncio.create_task(runtime.serve(stop))
    try:
        async def listening() -> bool:
            try:
                await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                return False
            return True

        await eventually(listening, what="the SMTP listener")
        mail, rcpt = await asyncio.to_thread(smtp_dialogue, port, services.email("alice"))
        assert mail[0] == 250
        assert rcpt[0] == 451, rcpt
        assert b"redis" not in rcpt[1].lower() and b"127.0.0.1" not in rcpt[1]
    finally:
        stop.set()
        await serving
        await runtime.close()


async def test_poison_mail_over_imap_does_not_stop_the_mailbox(bridge: Bridge) -> None:
    """A 1,000-deep multipart, a 1,000-deep forwarded chain and a dead reply address with
    a hostile display name, then an ordinary email: it is posted."""
    services = bridge.services
    support = services.email("support")
    alice = services.email("alice")
    deep = "".join(f'Content-Type: multipart/mixed; boundary="b{i}"\r\n\r\n--b{i}\r\n'
                   for i in range(1000))
    forwarded = "Content-Type: message/rfc822\r\n\r\nFrom: x@partner.test\r\n" * 1000
    poison = [
        (f"From: {alice}\r\nTo: {support}\r\nSubject: deep multipart\r\n"
         f"Message-ID: <{uuid.uuid4().hex}@partner.test>\r\n{deep}"
         "Content-Type: text/plain\r\n\r\nhello\r\n").encode(),
        (f"From: {alice}\r\nTo: {support}\r\nSubject: deep forward\r\n"
         f"Message-ID: <{uuid.uuid4().hex}@partner.test>\r\n{forwarded}"
         "Content-Type: text/plain\r\n\r\nhello\r\n").encode(),
        raw_mail(f'"{INJECTING_NAME}" <{alice}>', f"reply+{'c' * 24}@{services.mail_domain}",
                 INJECTING_SUBJECT, "hostile"),
    ]
    for data in poison:
        await send_raw(services, alice, [support], data)
    ordinary = make_mail(f"Alice <{alice}>", support, "Ordinary " + uuid.uuid4().hex[:6],
                         "After the poison.")
    await send_raw(services, alice, [support], ordinary.as_bytes())
    await card_with(bridge, str(ordinary["Subject"]))
    posted = str([m["blocks"] for m in await bridge.slack_posts()])
    assert "nests its parts too deeply" in posted


async def test_a_message_that_keeps_failing_is_set_aside(services: Services,
                                                         store: Store) -> None:
    """Whatever makes bridging one message fail (here: a bridge step that raises on it),
    the mailbox goes on: after three tries it is set aside, kept, and listed."""
    await clear_mailbox(services, "dave")
    dave = services.email("dave")
    for subject in ("first", "poison", "third"):
        await send_raw(services, dave, [dave], make_mail(dave, dave, subject, "x").as_bytes())
    await eventually(lambda: _count(services, 3), what="three emails at dave's")
    env = {k: v for k, v in services.env.items() if k.startswith("SWITCHBOARD_")}
    env.update(SWITCHBOARD_IMAP_USER=dave, SWITCHBOARD_IMAP_PASSWORD=services.password)
    settings = Settings.load(env)
    cfg = settings.imap
    assert cfg is not None
    delivered: list[str] = []

    async def deliver(raw: bytes, envelope: Envelope) -> None:
        subject = str(email.message_from_bytes(raw)["Subject"])
        if subject == "poison":
            raise ValueError("this step cannot handle it")
        if subject not in delivered:  # a re-read is dropped, as the real flow drops it
            delivered.append(subject)

    ingest = ImapIngest(cfg, "INBOX", deliver, store.ingest, ca_file=settings.tls_ca_file)
    stop = asyncio.Event()
    running = asyncio.create_task(ingest.run(stop))
    try:
        # Emails of different conversations are bridged side by side (in either order);
        # the checkpoint passes the poison only once it is set aside.
        async def set_aside_and_past_it() -> bool:
            cp = await store.ingest.checkpoint(ingest.account, "INBOX")
            return sorted(delivered) == ["first", "third"] and cp is not None and (
                await store.ingest.set_aside_message(
                    f"{ingest.account}:INBOX:{cp.uidvalidity}:{cp.last_uid - 1}")) is not None
        await eventually(set_aside_and_past_it, within=40,
                         what="the poison set aside and the checkpoint past it")
    finally:
        stop.set()
        await running
    (refusal,) = await store.ingest.refusals()
    assert refusal.subject == "poison" and refusal.source == f"imap:{ingest.name}"
    assert refusal.reason.startswith("set aside after 3 failed attempts (ValueError")
    checkpoint = await store.ingest.checkpoint(ingest.account, "INBOX")
    assert checkpoint is not None
    kept = await store.ingest.set_aside_message(
        f"{ingest.account}:INBOX:{checkpoint.uidvalidity}:{checkpoint.last_uid - 1}")
    assert kept is not None and b"Subject: poison" in kept


async def _count(services: Services, n: int) -> bool:
    return len(await mailbox(services, "dave")) == n
