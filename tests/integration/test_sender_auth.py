"""Sender authentication on the real services: the local DNS server publishes the test
domains' SPF (127.0.0.1 only), DKIM key and DMARC policy (p=reject); mail is sent
through Postfix (read back over IMAP) or straight to Switchboard's SMTP listener,
from 127.0.0.1 (allowed) or 127.0.0.2 ("elsewhere")."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bot.model import Address, Provenance
from bridges.email.auth import SenderAuthenticator, use_dns_server
from tests.bridge import SLACK_PEOPLE, Bridge, running_bridge
from tests.conftest import Services
from tests.mailhelp import ELSEWHERE, dkim_signed, eventually, mailbox, make_mail, send_mail
from tests.slackapi.client import SlackControl

pytestmark = pytest.mark.integration

ALICE_SLACK = SLACK_PEOPLE["alice"]


@pytest.fixture
async def bridge(services: Services, slack: SlackControl, http: aiohttp.ClientSession
                 ) -> AsyncIterator[Bridge]:
    async with running_bridge(services, slack, http) as running:
        await running.runtime.store.address_book.link(
            Address.email(services.email("alice")), provenance=Provenance.IMPORTED,
            verified=True)
        await running.runtime.store.address_book.link(
            Address.slack(running.team, ALICE_SLACK), provenance=Provenance.IMPORTED, verified=True,
            to=Address.email(services.email("alice")))
        yield running


async def card_of(bridge: Bridge, subject: str) -> str:
    async def find() -> dict[str, Any] | None:
        return next((m for m in await bridge.slack_posts() if subject in str(m["blocks"])), None)

    return str((await eventually(find, what=f"the card of {subject!r}"))["blocks"])


async def test_spoofed_from_is_marked_and_does_not_speak_as_the_colleague(bridge: Bridge
                                                                         ) -> None:
    services = bridge.services
    alice = services.email("alice")
    genuine = make_mail(f"Alice <{alice}>", services.email("support"),
                        "Genuine " + uuid.uuid4().hex, "From my own mail server.")
    await send_mail(services, genuine)
    spoofed = make_mail(f"Alice <{alice}>", services.email("support"),
                        "Spoofed " + uuid.uuid4().hex, "Please wire 10,000 EUR today.")
    await send_mail(services, spoofed, source=ELSEWHERE)

    shown = await card_of(bridge, str(genuine["Subject"]))
    assert f"<@{ALICE_SLACK}>" in shown  # shown as the mapped Slack identity
    assert "Unverified sender" not in shown
    shown = await card_of(bridge, str(spoofed["Subject"]))
    assert "Unverified sender" in shown
    assert "SPF fail" in shown and "DMARC fail" in shown
    assert f"<@{ALICE_SLACK}>" not in shown  # never shown as Alice's account
    entries = (await bridge.runtime.store.history.person([Address.email(alice)], 0, 10)).entries
    by_subject = {e.subject: e.meta.get("sender_auth") for e in entries}
    assert by_subject[str(spoofed["Subject"])] == "unverified"
    assert by_subject[str(genuine["Subject"])] == "verified"


async def test_dkim_signature_vouches_for_mail_from_elsewhere(bridge: Bridge) -> None:
    services = bridge.services
    alice = services.email("alice")
    mail = make_mail(f"Alice <{alice}>", services.email("support"), "Signed " + uuid.uuid4().hex,
                     "Sent from a laptop on a hotel network, signed by our domain.")
    await send_mail(services, mail, source=ELSEWHERE, data=dkim_signed(services, mail))
    shown = await card_of(bridge, str(mail["Subject"]))
    assert "Unverified sender" not in shown
    assert f"<@{ALICE_SLACK}>" in shown

    tampered = make_mail(f"Alice <{alice}>", services.email("support"),
                         "Tampered " + uuid.uuid4().hex, "The original text.")
    signed = dkim_signed(services, tampered).replace(b"The original text.", b"Pay Mallory.")
    await send_mail(services, tampered, source=ELSEWHERE, data=signed)
    shown = await card_of(bridge, str(tampered["Subject"]))
    assert "Unverified sender" in shown and "DKIM fail" in shown


async def test_the_smtp_listener_checks_the_connecting_client(bridge: Bridge) -> None:
    services = bridge.services
    alice = services.email("alice")
    direct = make_mail(f"Alice <{alice}>", services.email("support"), "Direct " + uuid.uuid4().hex,
                       "Straight to the listener.")
    await send_mail(services, direct, port=bridge.listener_port)
    spoofed = make_mail(f"Alice <{alice}>", services.email("support"),
                        "Direct spoof " + uuid.uuid4().hex, "Straight to the listener, forged.")
    await send_mail(services, spoofed, port=bridge.listener_port, source=ELSEWHERE)
    assert "Unverified sender" not in await card_of(bridge, str(direct["Subject"]))
    assert "Unverified sender" in await card_of(bridge, str(spoofed["Subject"]))


async def test_spoofed_answer_cannot_use_a_reply_address(bridge: Bridge) -> None:
    services = bridge.services
    alice = services.email("alice")
    runtime = bridge.runtime
    token = await runtime.store.tokens.issue("c-spoof-test", Address.email(alice), 3600)
    reply_to = f"reply+{token}@{services.env['SB_MAIL_DOMAIN']}"
    forged = make_mail(f"Alice <{alice}>", reply_to, "Re: invoice " + uuid.uuid4().hex,
                       "Yes, change the bank account.")
    before = len(await mailbox(services, "alice"))
    await send_mail(services, forged, source=ELSEWHERE)

    async def refused() -> str | None:
        return next((r.reason for r in await runtime.store.ingest.refusals()
                     if r.subject == str(forged["Subject"])), None)

    reason = await eventually(refused, what="the forged answer's refusal")
    assert "authenticated" in reason and "SPF fail" in reason
    # No bounce: the real Alice never wrote it, and must not get backscatter.
    assert len(await mailbox(services, "alice")) == before
    assert not [m for m in await bridge.slack_posts() if str(forged["Subject"]) in str(m)]


async def test_trusted_servers_results_are_honoured_and_others_ignored(services: Services
                                                                       ) -> None:
    use_dns_server("127.0.0.1", int(services.env["SB_DNS_PORT"]))
    check = SenderAuthenticator(trusted_hosts=["mx.example.net"])
    body = (b"From: Alice <alice@switchboard.test>\r\nTo: support@switchboard.test\r\n"
            b"Subject: hi\r\n\r\nhello\r\n")
    trusted = b"Authentication-Results: mx.example.net; dmarc=pass header.from=switchboard.test\r\n"
    outsider = b"Authentication-Results: evil.example; dmarc=pass header.from=switchboard.test\r\n"
    verdict = await check.check(trusted + body)
    assert verdict.may_act and "trusted server" in verdict.summary
    # An outsider's header proves nothing: with no other evidence the sender is unverified.
    assert not (await check.check(outsider + body)).may_act
    failed = b"Authentication-Results: mx.example.net; spf=fail smtp.mailfrom=switchboard.test;" \
             b" dmarc=fail header.from=switchboard.test\r\n"
    assert not (await check.check(failed + body)).may_act


async def test_a_signature_by_another_domain_does_not_vouch_for_the_from(services: Services
                                                                         ) -> None:
    import dkim

    from bridges.email.auth import Peer

    use_dns_server("127.0.0.1", int(services.env["SB_DNS_PORT"]))
    check = SenderAuthenticator()
    body = (b"From: Alice <alice@switchboard.test>\r\nTo: support@switchboard.test\r\n"
            b"Subject: signed elsewhere\r\nMessage-ID: <other-domain@partner.test>\r\n\r\nhi\r\n")
    key = await asyncio.to_thread(Path(services.env["SB_DKIM_KEY"]).read_bytes)
    selector = services.env["SB_DKIM_SELECTOR"].encode()
    elsewhere = Peer("127.0.0.2", "relay.partner.test", "bounces@partner.test")
    # partner.test signs a message claiming to be from switchboard.test: the signature is
    # valid, but it is not the From domain's, so DMARC fails.
    by_partner = dkim.sign(body, selector, b"partner.test", key) + body
    verdict = await check.check(by_partner, elsewhere)
    assert not verdict.may_act
    assert "DKIM pass" in verdict.summary and "DMARC fail" in verdict.summary
    by_owner = dkim.sign(body, selector, b"switchboard.test", key) + body
    assert (await check.check(by_owner, elsewhere)).may_act
