"""Which attachments of an email are posted: not too many, and never a type that runs
when opened, however its name is dressed up."""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass, replace

from bot.mail import InboundMail, MailAttachment


def file_type_name(filename: str) -> str:
    """The name as the receiving system will treat it, for the type check: Windows
    ignores trailing dots and spaces and reads ``name:stream`` (NTFS alternate data
    streams, ``::$DATA``) as ``name``; compatibility forms and invisible characters
    must not hide an extension either."""
    name = unicodedata.normalize("NFKC", filename)
    name = "".join(c for c in name if unicodedata.category(c) not in ("Cc", "Cf"))
    name = name.partition(":")[0]
    return name.rstrip(" .").lower()


@dataclass(frozen=True)
class AttachmentPolicy:
    """Which attachments are posted: not too many, and no executable types."""

    max_count: int = 20
    blocked: tuple[str, ...] = (".exe", ".bat", ".cmd", ".com", ".scr", ".js", ".vbs", ".msi",
                                ".ps1", ".jar", ".lnk")
    blocked_types: tuple[str, ...] = ("application/x-msdownload", "application/x-dosexec",
                                      "application/x-msdos-program")

    def is_blocked(self, attachment: MailAttachment) -> bool:
        """A blocked type, or a forwarded message carrying one (an .eml would hand it
        over just the same)."""
        names = (attachment.filename, *attachment.contains)
        return (any(file_type_name(n).endswith(self.blocked) for n in names)
                or attachment.content_type.lower() in self.blocked_types)

    def screen(self, mail: InboundMail) -> InboundMail:
        kept: list[MailAttachment] = []
        notes = list(mail.notes)
        for a in mail.attachments:
            if self.is_blocked(a):
                notes.append(f"The attachment {a.filename!r} is of a type that is never "
                             "posted.")
                kept.append(replace(a, content=b""))
            elif a.content and sum(1 for k in kept if k.content) >= self.max_count:
                kept.append(replace(a, content=b""))
            else:
                kept.append(a)
        extra = sum(1 for a in mail.attachments if a.content) - self.max_count
        if extra > 0:
            notes.append(f"Only {self.max_count} attachments are posted; {extra} more are "
                         "listed but not posted.")
        return replace(mail, attachments=tuple(kept), notes=tuple(notes))
