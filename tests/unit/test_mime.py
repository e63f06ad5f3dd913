"""Parsing real-shaped mail (fixtures in tests/fixtures/mail) into what chat shows."""

from __future__ import annotations

from email.message import EmailMessage
from pathlib import Path

from bot.mail import BodyFormat
from bot.model import Address
from bridges.email.mime import parse

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "mail"
LIMIT = 5_000_000


def load(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def test_plain_mail_with_signature_folded() -> None:
    mail = parse(load("plain.eml"), max_attachment_bytes=LIMIT)
    assert mail.sender == Address.email("alice@partner.test")
    assert mail.sender_name == "Alice Example"
    assert mail.to == (Address.email("support@switchboard.test"),)
    assert mail.subject == "Quarterly numbers"
    assert mail.message_id == "<q3-numbers-1@partner.test>" and mail.has_message_id
    assert mail.body.startswith("Hi team,") and mail.body.endswith("Alice")
    assert mail.signature == "-- \nAlice Example | Partner Ltd | +44 20 0000 0000"
    assert "Partner Ltd" not in mail.body
    assert mail.body_format is BodyFormat.TEXT and mail.notes == ()
    assert mail.date == 1795511700.0


def test_reply_keeps_the_quote_folded_and_threads() -> None:
    mail = parse(load("reply-quoted.eml"), max_attachment_bytes=LIMIT)
    assert mail.body == "Checked, they look right to me."
    assert mail.quoted.startswith("On Tue, 24 Nov 2026")
    assert "> the Q3 numbers" in mail.quoted
    assert mail.in_reply_to == "<q3-numbers-1@partner.test>"
    assert mail.thread_ids == ("<q3-numbers-1@partner.test>",)


def test_html_only_mail_is_sanitised_and_converted() -> None:
    mail = parse(load("html-only.eml"), max_attachment_bytes=LIMIT)
    assert mail.subject == "Café menu — this week"
    assert mail.body_format is BodyFormat.HTML
    # A heading is a line of its own, without markup that shows as stray asterisks.
    assert mail.body.startswith("This week\n\nSoup") and "*This week" not in mail.body
    assert "Soup & *bread*, see the menu (https://partner.test/menu)." in mail.body
    assert "Enjoy" in mail.body
    for hostile in ("alert", "script", "color:red", "tracker", "evil", "<"):
        assert hostile not in mail.body


def test_latin1_body_and_encoded_words() -> None:
    mail = parse(load("latin1.eml"), max_attachment_bytes=LIMIT)
    assert mail.sender_name == "Jürgen Müller"
    assert mail.subject == "Grüße aus München"
    assert mail.body == "Schöne Grüße aus München, à bientôt."
    assert mail.notes == ()


def test_unknown_charset_is_read_with_a_note() -> None:
    mail = parse(load("unknown-charset.eml"), max_attachment_bytes=LIMIT)
    assert mail.body == "Hello from a client with its own charset."
    assert any("unknown character set ('x-made-up-charset')" in n for n in mail.notes)


def test_missing_message_id_gets_a_stable_one() -> None:
    raw = load("no-message-id.eml")
    first = parse(raw, max_attachment_bytes=LIMIT)
    again = parse(raw, max_attachment_bytes=LIMIT)
    assert not first.has_message_id
    assert first.message_id == again.message_id
    assert first.message_id.endswith("@no-message-id.switchboard.invalid>")
    other = parse(raw.replace(b"has no", b"still has no"), max_attachment_bytes=LIMIT)
    assert other.message_id != first.message_id


def test_truncated_mime_keeps_what_arrived() -> None:
    mail = parse(load("truncated.eml"), max_attachment_bytes=LIMIT)
    assert mail.body == "The first part arrived."
    assert any("damaged or incomplete" in n for n in mail.notes)
    assert [a.filename for a in mail.attachments] == ["report.pdf"]


def test_inline_image_and_rfc2231_filename() -> None:
    mail = parse(load("attachments.eml"), max_attachment_bytes=LIMIT)
    assert mail.body == "Here is the photo and the invoice."
    photo, invoice = mail.attachments
    assert (photo.filename, photo.content_type, photo.inline, photo.content_id) == (
        "photo.png", "image/png", True, "photo1")
    assert photo.content.startswith(b"\x89PNG")
    assert invoice.filename == "Rechnung März.pdf"
    assert invoice.content.startswith(b"%PDF-1.4")


def test_oversized_attachment_is_dropped_with_a_note() -> None:
    msg = EmailMessage()
    msg["From"] = "alice@partner.test"
    msg["To"] = "support@switchboard.test"
    msg["Subject"] = "big file"
    msg.set_content("see attached")
    msg.add_attachment(b"\0" * 10_000_000, maintype="application", subtype="octet-stream",
                       filename="big.bin")
    mail = parse(msg.as_bytes(), max_attachment_bytes=LIMIT)
    (big,) = mail.attachments
    assert big.dropped and big.size == 10_000_000
    assert any("'big.bin' (10.0 MB) is over the 5.0 MB limit" in n for n in mail.notes)
    assert mail.body == "see attached"


def test_empty_body_is_noted() -> None:
    raw = b"From: a@partner.test\r\nTo: support@switchboard.test\r\nSubject: empty\r\n\r\n"
    mail = parse(raw, max_attachment_bytes=LIMIT)
    assert mail.body == "" and "The message has no text." in mail.notes


def test_garbage_does_not_raise() -> None:
    for raw in (b"", b"\xff\xfe\x00garbage", b"From: <<<>>>\r\n\r\nbody",
                b"Content-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\n--x--"):
        mail = parse(raw, max_attachment_bytes=LIMIT)
        assert mail.message_id


def test_deep_nesting_is_bounded() -> None:
    depth = 200
    head = "".join(f"Content-Type: multipart/mixed; boundary=b{i}\r\n\r\n--b{i}\r\n"
                   for i in range(depth))
    raw = ("From: a@partner.test\r\nSubject: deep\r\n" + head + "Content-Type: text/plain\r\n"
           "\r\nhidden\r\n").encode()
    mail = parse(raw, max_attachment_bytes=LIMIT)
    assert any("nests its parts too deeply" in n for n in mail.notes)


def test_attachment_names_read_as_they_are() -> None:
    """A right-to-left override makes ``invoice\\u202efdp.exe`` look like a PDF; the name
    is shown (and screened) as what it is, and path parts never survive."""
    from email.message import EmailMessage

    msg = EmailMessage()
    msg["From"] = "a@partner.test"
    msg["Subject"] = "names"
    msg.set_content("see attached")
    msg.add_attachment(b"MZ", maintype="application", subtype="octet-stream",
                       filename="invoice\u202efdp.exe")
    msg.add_attachment(b"x", maintype="text", subtype="plain", filename="../../etc/passwd")
    mail = parse(msg.as_bytes(), max_attachment_bytes=LIMIT)
    assert [a.filename for a in mail.attachments] == ["invoicefdp.exe", ".._.._etc_passwd"]
