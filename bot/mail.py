"""An email as the core sees it: parsed, cleaned, with what could not be read noted."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from bot.model import Address


@dataclass(frozen=True)
class MailAttachment:
    filename: str
    content_type: str
    size: int
    content: bytes  # empty when the attachment was over the limit (see InboundMail.notes)
    inline: bool = False
    content_id: str = ""
    # A forwarded message's own attachments (names), screened like this message's.
    contains: tuple[str, ...] = ()

    @property
    def dropped(self) -> bool:
        return self.size > 0 and not self.content


class BodyFormat(enum.StrEnum):
    TEXT = "text"  # the sender's text/plain part
    HTML = "html"  # converted from sanitised HTML
    NONE = "none"


class SenderTrust(enum.StrEnum):
    VERIFIED = "verified"  # DMARC (or an aligned DKIM/SPF pass) vouches for the From address
    UNVERIFIED = "unverified"
    UNCHECKED = "unchecked"  # checks turned off by configuration: every sender is believed


@dataclass(frozen=True)
class SenderAuth:
    trust: SenderTrust
    summary: str  # what the checks found, for people ("DKIM pass, SPF fail, DMARC pass")

    @property
    def may_act(self) -> bool:
        """Whether the email may speak as its sender: be shown as their chat identity,
        use a reply address."""
        return self.trust is not SenderTrust.UNVERIFIED


NOT_CHECKED = SenderAuth(SenderTrust.UNVERIFIED, "not checked")


@dataclass(frozen=True)
class InboundMail:
    """One received email. ``message_id`` is always set: a missing Message-ID is replaced
    by one derived from the content, so a re-read of the same message is recognised."""

    message_id: str
    has_message_id: bool
    sender: Address | None  # None when From is missing or unreadable
    sender_name: str
    to: tuple[Address, ...]
    cc: tuple[Address, ...]
    subject: str
    date: float
    body: str  # what is shown: quoted tail and signature folded away
    quoted: str  # the folded quoted tail, kept
    signature: str
    body_format: BodyFormat
    in_reply_to: str = ""
    references: tuple[str, ...] = ()
    attachments: tuple[MailAttachment, ...] = ()
    notes: tuple[str, ...] = ()  # problems a reader should know about
    headers: dict[str, str] = field(default_factory=dict)  # loop-relevant headers, lowercased
    size: int = 0
    envelope_recipients: tuple[Address, ...] = ()  # RCPT TO when received over SMTP
    auth: SenderAuth = NOT_CHECKED  # safe by default: unchecked mail cannot act
    # MAIL FROM when received over SMTP: "" is the null reverse-path of a bounce;
    # None when unknown (read over IMAP, where Return-Path says it).
    envelope_sender: str | None = None
    # Where the receiving server delivered it (its topmost Delivered-To / X-Original-To):
    # mail by Bcc, alias or list names someone else in To/Cc.
    delivered_to: tuple[Address, ...] = ()
    report: str = ""  # the report's type for a delivery or read report, else ""
    # A delivery status notification's per-recipient fields (RFC 3464: final-recipient,
    # action, status, diagnostic-code, ...), lowercased names, unfolded values.
    delivery_status: tuple[dict[str, str], ...] = ()

    @property
    def recipients(self) -> tuple[Address, ...]:
        """Who it was for, the envelope first: what the servers recorded is the truth
        for mail in transit; the headers are what the sender wrote."""
        return tuple(dict.fromkeys((*self.envelope_recipients, *self.delivered_to,
                                    *self.to, *self.cc)))

    @property
    def thread_ids(self) -> tuple[str, ...]:
        """Message-IDs this one answers, most specific first (In-Reply-To, then References)."""
        ids = [self.in_reply_to] if self.in_reply_to else []
        ids += reversed(self.references)
        return tuple(dict.fromkeys(i for i in ids if i))


@dataclass(frozen=True)
class Peer:
    """The SMTP client an email came from, as Switchboard's own SMTP listener saw it."""

    ip: str
    helo: str
    mail_from: str


@dataclass(frozen=True)
class Envelope:
    """How a raw email reached Switchboard, beside its bytes."""

    source: str  # "smtp", or "imap:<mailbox>": shown with refused mail
    recipients: tuple[Address, ...] = ()  # RCPT TO, when Switchboard was the SMTP server
    peer: Peer | None = None  # the connecting client, likewise
