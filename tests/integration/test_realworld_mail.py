"""Real-world shaped mail (tests/fixtures/realworld) through the real services: bounces
and reports never reach chat by either way in, mail by Bcc or alias is routed by the
envelope, and forwarded mail, same-name files and internationalised senders arrive
whole. The cards are read as a person reads them: one field per line."""

from __future__ import annotations

import asyncio
import re
import smtplib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.bridge import Bridge, running_bridge
from tests.conftest import Services
from tests.mailhelp import eventually, make_mail, send_raw
from tests.slackapi.client import SlackControl

pytestmark = pytest.mark.integration

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "realworld"
BOUNCES = ("postfix-dsn.eml", "exim-no-autosubmitted.eml", "exchange-ndr.eml",
           "qmail-failure.eml", "sendmail-returned.eml", "gmail-dsn.eml",
           "mdn-read-receipt.eml")


@pytest.fixture
async def bridge(services: Services, slack: SlackControl, http: aiohttp.ClientSession
                 ) -> AsyncIterator[Bridge]:
    async with running_bridge(services, slack, http) as running:
        yield running


def fixture(name: str, **replace: str) -> bytes:
    """A fixture with a fresh Message-ID (and other text replaced), so reruns are new."""
    text = (FIXTURES / name).read_bytes()
    for old, new in replace.items():
        text = text.replace(old.encode(), new.encode())
    return re.sub(rb"\r?\n", b"\r\n", text)  # lines end in CRLF in transit


def fresh_ids(raw: bytes) -> bytes:
    lines = raw.split(b"\r\n")
    for i, line in enumerate(lines):
        if line.lower().startswith(b"message-id:"):
            lines[i] = f"Message-ID: <{uuid.uuid4().hex}@partner.test>".encode()
            break
    return b"\r\n".join(lines)


async def refused_count(bridge: Bridge) -> int:
    return len(await bridge.runtime.store.ingest.refusals(100))


def _listener_send(port: int, mail_from: str, rcpt: str, data: bytes) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as smtp:
        smtp.sendmail(mail_from, [rcpt], data)


async def test_bounces_and_reports_never_reach_chat(bridge: Bridge) -> None:
    services = bridge.services
    support = services.email("support")
    for name in BOUNCES:
        # over IMAP, through the mail server, from a named envelope sender (a forwarded
        # bounce has one): the message itself must give it away ...
        await send_raw(services, "postmaster@partner.test", [support],
                       fresh_ids(fixture(name)))
        # ... and straight to Switchboard's listener, with a null envelope sender
        await asyncio.to_thread(_listener_send, bridge.listener_port, "", support,
                                fresh_ids(fixture(name)))
    # A plain-looking message is automatic too when its envelope sender is null.
    plain = make_mail("someone@partner.test", support, "Looks human", "but MAIL FROM:<>")
    await asyncio.to_thread(_listener_send, bridge.listener_port, "", support,
                            plain.as_bytes())

    async def all_refused() -> bool:
        return await refused_count(bridge) >= 2 * len(BOUNCES) + 1

    await eventually(all_refused, within=60, what="every bounce and report refused")
    reasons = [r.reason for r in await bridge.runtime.store.ingest.refusals(100)]
    assert all(r.startswith("not bridged: it ") for r in reasons), reasons
    assert any("null return path" in r for r in reasons)
    assert any("automatic report (delivery-status)" in r for r in reasons)
    assert any("delivery failure notice" in r for r in reasons)
    assert await bridge.slack_posts() == []


async def test_mail_by_bcc_or_alias_is_routed_by_the_envelope(bridge: Bridge) -> None:
    """To names a list elsewhere; the server recorded delivery for support@."""
    services = bridge.services
    subject = f"Bcc copy {uuid.uuid4().hex[:6]}"
    mail = make_mail("Kim <kim@partner.test>", "all-staff@partner.test", subject,
                     "Sent to the list; support@ got it by Bcc.")
    await send_raw(services, "kim@partner.test", [services.email("support")],
                   mail.as_bytes())

    async def posted() -> bool:
        return any(subject in str(p["blocks"]) for p in await bridge.slack_posts())

    await eventually(posted, within=30, what="the Bcc copy in the support channel")


async def test_forwarded_mail_same_name_files_and_eai_sender_arrive_whole(
        bridge: Bridge) -> None:
    services = bridge.services
    support, sales = services.email("support"), services.email("sales")
    tag = uuid.uuid4().hex[:6]
    await send_raw(services, "alice@switchboard.test", [support], fixture(
        "forwarded-as-attachment.eml", **{"Fwd: Contract renewal": f"Fwd: Contract {tag}",
                                          "<fwd-attach-1@": f"<fwd-{tag}@"}))
    await send_raw(services, "alice@switchboard.test", [sales], fixture(
        "same-name-attachments.eml", **{"Two scans": f"Two scans {tag}",
                                        "<same-name-5@": f"<same-{tag}@"}))
    await send_raw(services, "bounce-me-not@partner.test", [support], fixture(
        "eai-sender.eml", **{"Bestellung": f"Bestellung {tag}", "<eai-4@": f"<eai-{tag}@"}))

    async def forwarded() -> list[dict[str, Any]]:
        return [p for p in await bridge.slack_posts() if f"Contract {tag}" in str(p["blocks"])]

    (card,) = await eventually(forwarded, within=30, what="the forwarded mail's card")
    shown = str(card["blocks"])
    assert "We need a signature by Friday." in shown and "Forwarded message" in shown

    async def eml() -> list[dict[str, Any]]:
        return [f for m in await bridge.slack_files() for f in m["files"]
                if str(f["name"]).endswith(".eml")]

    (kept,) = await eventually(eml, within=30, what="the forwarded message as a file")
    assert kept["name"] == "Contract renewal.eml"
    content = await bridge.slack.file_content(str(kept["id"]))
    assert b"Message-ID: <contract-7@partner.test>" in content

    async def scans() -> list[dict[str, Any]]:
        return [e for e in await bridge.alice.messages(bridge.room)
                if e["content"].get("msgtype") == "m.file"
                and e["content"].get("body") == "scan.pdf"]

    both = await eventually(lambda: _two(scans), within=30, what="both scan.pdf files")
    downloads = {await bridge.alice.download(str(e["content"]["url"])) for e in both}
    assert len(downloads) == 2

    async def eai() -> list[dict[str, Any]]:
        return [p for p in await bridge.slack_posts() if f"Bestellung {tag}" in str(p["blocks"])]

    (card,) = await eventually(eai, within=30, what="the internationalised sender's card")
    header = card["blocks"][0]["text"]["text"]
    assert header.splitlines()[0] == "*From:* Jöran &lt;jöran.müller@partner.test&gt;"


async def _two(probe: Callable[[], Awaitable[list[dict[str, Any]]]]
               ) -> list[dict[str, Any]] | None:
    found = await probe()
    return found if len(found) >= 2 else None


async def test_cards_show_one_field_per_line(bridge: Bridge) -> None:
    services = bridge.services
    subject = f"Layout {uuid.uuid4().hex[:6]}"
    mail = make_mail("Bob <bob@partner.test>", services.email("support"), subject, "Body")
    # From another machine: the sender is not verified, so the warning line shows too.
    await send_raw(services, "bob@partner.test", [services.email("support")], mail.as_bytes(),
                   source="127.0.0.2")

    async def card() -> list[dict[str, Any]]:
        return [p for p in await bridge.slack_posts() if subject in str(p["blocks"])]

    (post,) = await eventually(card, within=30, what="the card")
    lines = post["blocks"][0]["text"]["text"].splitlines()
    assert lines[0] == "*From:* Bob &lt;bob@partner.test&gt;"
    assert lines[1].startswith(":warning: *Unverified sender*")
    assert lines[2] == f"*To:* {services.email('support')}"
    assert lines[3] == f"*Subject:* {subject}"
