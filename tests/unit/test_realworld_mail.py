"""Real-world shaped mail (tests/fixtures/realworld, see its README): every bounce shape
is recognised as automatic, and nothing in the others disappears without a word."""

from __future__ import annotations

from email import message_from_bytes, policy
from email.message import Message
from pathlib import Path

import pytest

from bot.flows.outgoing import automatic_reason
from bridges.email.mime import parse

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "realworld"
LIMIT = 5_000_000

AUTOMATIC = ("postfix-dsn.eml", "exim-no-autosubmitted.eml", "exchange-ndr.eml",
             "qmail-failure.eml", "sendmail-returned.eml", "gmail-dsn.eml",
             "mdn-read-receipt.eml", "vacation-autoreply.eml")
PEOPLE = ("forwarded-as-attachment.eml", "forwarded-inline-only.eml", "mailman-digest.eml",
          "apple-mixed-inline.eml", "eai-sender.eml", "same-name-attachments.eml")


def load(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


@pytest.mark.parametrize("name", AUTOMATIC)
def test_bounces_reports_and_auto_replies_are_automatic(name: str) -> None:
    assert automatic_reason(parse(load(name), max_attachment_bytes=LIMIT)) is not None


@pytest.mark.parametrize("name", PEOPLE)
def test_mail_from_people_is_not_taken_for_automatic(name: str) -> None:
    assert automatic_reason(parse(load(name), max_attachment_bytes=LIMIT)) is None


def test_a_null_envelope_sender_is_automatic_whatever_the_headers_say() -> None:
    raw = b"From: Someone <someone@partner.test>\nSubject: hello\n\nplain text\n"
    assert automatic_reason(parse(raw, max_attachment_bytes=LIMIT)) is None
    assert "null return path" in str(automatic_reason(
        parse(raw, max_attachment_bytes=LIMIT, envelope_sender="")))


def test_a_forwarded_attachment_is_shown_and_kept() -> None:
    mail = parse(load("forwarded-as-attachment.eml"), max_attachment_bytes=LIMIT)
    assert mail.body.startswith("FYI, can someone from legal look at this?")
    assert "---------- Forwarded message ----------" in mail.body
    assert "From: Jordan Vendor <jordan@partner.test>" in mail.body
    assert "We need a signature by Friday." in mail.body
    assert "[attachments of the forwarded message: terms.pdf]" in mail.body
    (kept,) = mail.attachments
    assert kept.filename == "Contract renewal.eml" and kept.content_type == "message/rfc822"
    inner = message_from_bytes(kept.content, policy=policy.default)
    assert inner["Message-ID"] == "<contract-7@partner.test>"


def test_a_message_that_is_only_a_forward_shows_its_text() -> None:
    mail = parse(load("forwarded-inline-only.eml"), max_attachment_bytes=LIMIT)
    assert "The east region was down from *05:10* to *05:52* UTC." in mail.body
    assert [a.filename for a in mail.attachments] == ["Outage report.eml"]


def test_every_digest_entry_is_shown() -> None:
    mail = parse(load("mailman-digest.eml"), max_attachment_bytes=LIMIT)
    assert "Today's Topics:" in mail.body
    assert "db1 is at 91% disk." in mail.body
    assert "Cleaned the old backups, now 60%." in mail.body
    assert len(mail.attachments) == 2


def test_second_inline_text_part_is_kept() -> None:
    mail = parse(load("apple-mixed-inline.eml"), max_attachment_bytes=LIMIT)
    assert mail.body.startswith("Here is the first photo:")
    assert mail.body.endswith("Can someone come on Monday?")
    assert [a.filename for a in mail.attachments] == ["damage.png"]


def test_an_internationalised_sender_is_shown() -> None:
    mail = parse(load("eai-sender.eml"), max_attachment_bytes=LIMIT)
    assert mail.sender is not None and mail.sender.value == "jöran.müller@partner.test"
    assert mail.sender_name == "Jöran"


def test_same_name_attachments_are_both_kept() -> None:
    mail = parse(load("same-name-attachments.eml"), max_attachment_bytes=LIMIT)
    assert [a.filename for a in mail.attachments] == ["scan.pdf", "scan.pdf"]
    assert mail.attachments[0].content != mail.attachments[1].content


def _leaves(msg: Message) -> list[Message]:
    if msg.get_content_maintype() == "message" or not msg.is_multipart():
        return [msg]
    payload = msg.get_payload()
    return [leaf for part in (payload if isinstance(payload, list) else [])
            for leaf in _leaves(part)]


@pytest.mark.parametrize("name", AUTOMATIC + PEOPLE)
def test_every_part_is_shown_uploaded_or_listed(name: str) -> None:
    """Each leaf part of the message is in the text, among the attachments, or is the
    other version of a part that is shown (multipart/alternative)."""
    raw = load(name)
    mail = parse(raw, max_attachment_bytes=LIMIT)
    shown = mail.body + mail.quoted + mail.signature
    message = message_from_bytes(raw, policy=policy.default)
    for leaf in _leaves(message):
        ctype = leaf.get_content_type()
        if ctype.startswith("message/") and ctype not in ("message/rfc822", "message/global"):
            continue  # the machine-readable half of a report, which is never bridged
        if ctype in ("text/plain", "text/html") and not leaf.get_filename():
            text = leaf.get_content()
            first = next((line.strip() for line in text.splitlines()
                          if line.strip() and "<" not in line), "")
            alternative = ctype == "text/html" and mail.body_format.value == "text"
            assert alternative or not first or first in shown, (name, first)
            continue
        assert any(a.content_type == ctype or ctype.startswith("message/")
                   for a in mail.attachments), (name, ctype)


@pytest.mark.parametrize("name", ["postfix-dsn.eml", "gmail-dsn.eml", "exchange-ndr.eml",
                                  "exim-no-autosubmitted.eml", "qmail-failure.eml",
                                  "sendmail-returned.eml"])
def test_every_bounce_shape_reads_as_a_failure_with_the_remote_reason(name: str) -> None:
    from bot.bounces import read_bounce

    mail = parse(load(name), max_attachment_bytes=LIMIT)
    report = read_bounce(mail)
    assert report is not None and report.failed, name
    assert report.reason and len(report.reason) <= 300
    assert any(word in report.reason.lower() for word in
               ("5.", "550", "unknown", "does not exist", "not found", "rejected",
                "no mailbox", "undeliver", "failed")), report.reason


def test_a_delay_or_a_read_receipt_is_no_failure() -> None:
    from bot.bounces import read_bounce

    for name in ("mdn-read-receipt.eml", "vacation-autoreply.eml"):
        mail = parse(load(name), max_attachment_bytes=LIMIT)
        report = read_bounce(mail)
        assert report is None or not report.failed, name
