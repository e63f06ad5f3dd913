"""Which attachments are posted: the count limit and the never-posted types."""

from __future__ import annotations

from dataclasses import replace

from bot.attachments import AttachmentPolicy
from bot.mail import BodyFormat, InboundMail, MailAttachment


def mail_with(*names: str) -> InboundMail:
    return InboundMail(
        message_id="<m@x>", has_message_id=True, sender=None, sender_name="", to=(), cc=(),
        subject="s", date=0.0, body="b", quoted="", signature="", body_format=BodyFormat.TEXT,
        attachments=tuple(MailAttachment(n, "application/octet-stream", 3, b"abc")
                          for n in names))


def test_executables_are_never_posted() -> None:
    screened = AttachmentPolicy().screen(mail_with("report.pdf", "Setup.EXE", "run.js"))
    assert [(a.filename, a.dropped) for a in screened.attachments] == [
        ("report.pdf", False), ("Setup.EXE", True), ("run.js", True)]
    assert sum("never posted" in n for n in screened.notes) == 2


def test_only_so_many_are_posted() -> None:
    screened = AttachmentPolicy(max_count=2).screen(mail_with("a", "b", "c", "d"))
    assert [a.dropped for a in screened.attachments] == [False, False, True, True]
    assert "Only 2 attachments are posted; 2 more are listed but not posted." in screened.notes


def test_disguised_executables_are_caught() -> None:
    # What Windows would run: trailing dots/spaces dropped, NTFS streams read as the file,
    # full-width letters folded, invisible characters ignored.
    disguised = ("invoice.exe.", "invoice.exe::$DATA", "invoice.exe:zone.pdf", "invoice.exe . .",
                 "invoice.\uff45\uff58\uff45", "invoice.e\u200bxe", "photo\u202egpj.scr")
    screened = AttachmentPolicy().screen(mail_with(*disguised, "minutes 10.30.pdf"))
    assert [a.dropped for a in screened.attachments] == [True] * len(disguised) + [False]


def test_a_forwarded_message_carrying_an_executable_is_not_posted() -> None:
    forwarded = MailAttachment("Invoice.eml", "message/rfc822", 10, b"0123456789",
                               contains=("invoice.pdf", "payload.exe."))
    harmless = MailAttachment("Minutes.eml", "message/rfc822", 10, b"0123456789",
                              contains=("minutes.pdf",))
    mail = mail_with()
    screened = AttachmentPolicy().screen(replace(mail, attachments=(forwarded, harmless)))
    assert [a.dropped for a in screened.attachments] == [True, False]
