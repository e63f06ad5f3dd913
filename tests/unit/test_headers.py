"""Header injection: every kind of outgoing email, built with hostile values from every
source a person controls, goes out with exactly the headers Switchboard meant and to
exactly the recipients it meant (the interpreter here may lack CVE-2024-6923's fix)."""

from __future__ import annotations

from decimal import Decimal
from email import message_from_bytes, policy
from email.message import EmailMessage

import pytest

from bot.commands import CommandContext, _code_email
from bot.flows.outgoing import bounce_message, compose_reply
from bot.headers import UnsafeHeader, header_text, seal
from bot.mail import BodyFormat, InboundMail
from bot.metering import ChargeLine, Charges, Customer, Usage
from bot.model import Address, EntryKind, HistoryEntry
from bot.reports import ChargeReports

# What an attacker types where a name or subject goes: encoded words that decode to line
# breaks, nested encodings, raw breaks, and the other control characters.
HOSTILE = (
    "=?UTF-8?Q?=0A?=Bcc: victim@outside.test",
    "=?UTF-8?Q?=0D=0A?=X-Injected: yes",
    "Invoice =?utf-8?b?DQpCY2M6IHZpY3RpbUBvdXRzaWRlLnRlc3Q=?= due",
    "=?UTF-8?Q?=3D=3FUTF-8=3FQ=3F=3D0A=3F=3D?=Bcc: victim@outside.test",
    "Line\r\nBcc: victim@outside.test",
    "Tab\tand\x00nul\x1b[31m and \u2028separator\u202e",
    "=?UTF-8?Q?=0A=0A?=<html><body>phish</body></html>",
)
ALLOWED = {"from", "to", "reply-to", "subject", "date", "message-id", "in-reply-to",
           "references", "x-switchboard", "x-switchboard-sender", "auto-submitted",
           "mime-version", "content-type", "content-transfer-encoding"}


def sent(message: EmailMessage) -> tuple[EmailMessage, list[str]]:
    """What leaves: the sealed message as bytes read back, and its envelope recipients."""
    _, recipients = seal(message)
    back = message_from_bytes(message.as_bytes(), policy=policy.default)
    assert isinstance(back, EmailMessage)
    return back, recipients


def assert_clean(message: EmailMessage, recipients: list[str], to: str) -> None:
    back, rcpt = sent(message)
    names = {k.lower() for k in back}
    assert names <= ALLOWED, names - ALLOWED
    assert rcpt == recipients == [to]
    for name, value in back.items():
        assert "\n" not in str(value) and "\r" not in str(value), (name, value)
    header_block = message.as_string().split("\n\n")[0].lower().splitlines()
    assert not [line for line in header_block if line.startswith(("x-injected", "bcc"))]
    assert "victim@outside.test" not in [a.lower() for a in rcpt]


def answered(subject: str) -> HistoryEntry:
    return HistoryEntry(id="m1", conversation_id="c1", kind=EntryKind.EMAIL,
                        sender=Address.email("carol@partner.test"), recipients=(), at=0.0,
                        text="body", subject=subject, meta={"message_id": "<a@partner.test>"})


@pytest.mark.parametrize("hostile", HOSTILE)
def test_reply_and_send_as_email_from_hostile_names_and_subjects(hostile: str) -> None:
    to = Address.email("carol@partner.test")
    msg = compose_reply(bot_email="bot@switchboard.test", reply_domain="switchboard.test",
                        sender_name=hostile, to=to, text="Thanks", subject=hostile,
                        token="abcdefgh", message_key="d1", answering=answered(hostile),
                        history=(answered(hostile),), sender=Address.matrix("@m:evil.test"))
    assert_clean(msg, [to.value], to.value)
    back, _ = sent(msg)
    assert back["X-Switchboard-Sender"] == "matrix:@m:evil.test"
    body = back.get_body(("plain",))
    assert body is not None and "@m:evil.test on Matrix" in body.get_content()


def inbound(name: str, subject: str) -> InboundMail:
    return InboundMail(message_id="<x@partner.test>", has_message_id=True,
                       sender=Address.email("carol@partner.test"), sender_name=name, to=(),
                       cc=(), subject=subject, date=0.0, body="<b>long hostile body</b>",
                       quoted="", signature="", body_format=BodyFormat.TEXT)


@pytest.mark.parametrize("hostile", HOSTILE)
def test_bounce_names_only_the_address_and_a_short_clean_subject(hostile: str) -> None:
    msg = bounce_message(inbound(hostile, hostile + " " + "x" * 300), "the reply address "
                         "has expired", "bot@switchboard.test")
    assert_clean(msg, ["carol@partner.test"], "carol@partner.test")
    back, _ = sent(msg)
    assert str(back["To"]) == "carol@partner.test"
    assert len(str(back["Subject"])) <= 80
    assert back.get_content_type() == "text/plain"
    assert "hostile body" not in back.get_content()


@pytest.mark.parametrize("hostile", HOSTILE)
def test_verification_code_with_a_hostile_chat_name(hostile: str) -> None:
    ctx = CommandContext(user=Address.matrix("@m:evil.test"), user_name=hostile, where=None,
                         shows=None, request="r1")
    msg = _code_email("bot@switchboard.test", Address.email("m@partner.test"), ctx, "123456")
    assert_clean(msg, ["m@partner.test"], "m@partner.test")


@pytest.mark.parametrize("hostile", HOSTILE)
def test_charge_report_for_a_hostile_customer(hostile: str) -> None:
    reports = ChargeReports(usage=None, customers=None, mailer=None, card=None,  # type: ignore[arg-type]
                            bot_email="bot@switchboard.test", public_url="http://x.test")
    customer = Customer(id=f"matrix:{hostile}", name=hostile,
                        billing_email="billing@partner.test")
    charges = Charges(customer.id, "2026-10", "EUR",
                      (ChargeLine("emails", Decimal(3), "email", Decimal("0.01"),
                                  Decimal("0.03")),), Usage(customer.id, "2026-10", {}))
    msg = reports.compose(customer, charges, Address.email("billing@partner.test"))
    assert_clean(msg, ["billing@partner.test"], "billing@partner.test")


def test_header_text_decodes_nested_words_and_drops_controls() -> None:
    assert header_text("=?UTF-8?Q?=3D=3FUTF-8=3FQ=3F=3D0A=3F=3D?=Bcc: x") == "Bcc: x"
    assert header_text("Zoé =?utf-8?q?=C3=AB?= =?utf-8?q?x?= \u202eevil\x00") == "Zoé ëx evil"
    assert header_text("a" * 50, limit=10) == "aaaaaaaaa…"


def test_a_message_without_recipients_is_refused() -> None:
    msg = EmailMessage()
    msg["From"] = "bot@switchboard.test"
    msg["To"] = "undisclosed-recipients:;"
    msg.set_content("x")
    with pytest.raises(UnsafeHeader):
        seal(msg)


def test_bcc_counts_as_a_recipient_but_is_not_sent() -> None:
    msg = EmailMessage()
    msg["From"] = "bot@switchboard.test"
    msg["To"] = "a@switchboard.test"
    msg["Bcc"] = "b@switchboard.test"
    msg.set_content("x")
    _, recipients = seal(msg)
    assert recipients == ["a@switchboard.test", "b@switchboard.test"]
    assert "Bcc" not in msg
