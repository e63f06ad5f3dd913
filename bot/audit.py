"""The audit trail: every email Switchboard sends and every action it refuses, with who
asked, what, and when. It records that something happened, never a message's text."""

from __future__ import annotations

import enum
import logging
import time
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import getaddresses
from typing import Protocol

from bot.headers import header_text
from bot.model import Address
from bot.ports import MailSender

log = logging.getLogger(__name__)


class AuditAction(enum.StrEnum):
    MAIL_SENT = "mail_sent"  # an email left (reply, send as email, code, report, bounce)
    REFUSED = "refused"  # a person's action was not allowed
    INVITE_REFUSED = "invite_refused"  # the bot did not join a room
    ERASED = "erased"  # a person's data was erased on request (not what it was)
    ROUTE_CHANGED = "route_changed"  # a route was added, changed or removed from chat
    HELD_DECIDED = "held_decided"  # an admin posted, discarded or allowed held mail
    BLOCK_CHANGED = "block_changed"  # a sender or domain was blocked or unblocked


@dataclass(frozen=True)
class AuditEvent:
    action: AuditAction
    actor: str  # who: a chat or email address, or "switchboard" for its own mail
    target: str  # what it concerned: recipients, a room, a command
    detail: str  # why, or what kind of email
    at: float = field(default_factory=time.time)

    @classmethod
    def invite_refused(cls, inviter: Address, room: str) -> AuditEvent:
        return cls(AuditAction.INVITE_REFUSED, str(inviter), header_text(room, 200),
                   "the inviter is not allowed to use Switchboard")

    @classmethod
    def refused(cls, actor: Address | str, target: str, reason: str) -> AuditEvent:
        return cls(AuditAction.REFUSED, str(actor), header_text(target, 200),
                   header_text(reason, 300))


class AuditLog(Protocol):
    async def record(self, event: AuditEvent) -> None:
        """Keep ``event``; the log is capped, oldest first out."""
        ...

    async def recent(self, limit: int = 100) -> list[AuditEvent]:
        """The newest ``limit`` events, newest first."""
        ...


async def record_or_log(audit: AuditLog | None, event: AuditEvent) -> None:
    """Keep ``event`` if there is a trail; what it records stands even when the trail
    cannot be written (that is logged)."""
    if audit is None:
        return
    try:
        await audit.record(event)
    except Exception as exc:
        log.error("could not record %s by %s in the audit trail: %s", event.action.value,
                  event.actor, exc)


def sent_mail_event(message: EmailMessage, kind: str) -> AuditEvent:
    """What an outgoing email is, for the trail: who it is from (the chat account that
    wrote it, if any), to whom, which kind, and its subject."""
    recipients = ", ".join(a for _, a in getaddresses(
        [str(v) for n in ("to", "cc") for v in message.get_all(n, [])]) if a)
    actor = str(message.get("X-Switchboard-Sender") or "switchboard")
    subject = header_text(str(message.get("subject") or ""), 120)
    return AuditEvent(AuditAction.MAIL_SENT, actor, recipients, f"{kind}: {subject}")


class AuditedMailer:
    """A mail sender that leaves a trace of every email it sends: the one door all of
    Switchboard's outgoing mail goes through."""

    def __init__(self, mailer: MailSender, audit: AuditLog, marker: str) -> None:
        self.mailer = mailer
        self.audit = audit
        self.marker = marker

    async def send(self, message: EmailMessage) -> None:
        await self.mailer.send(message)
        key = str(message.get(self.marker) or "").partition(";")[0].strip()
        kind = key if key in ("bounce", "verification", "report") else "reply"
        try:
            await self.audit.record(sent_mail_event(message, kind))
        except Exception as exc:  # the mail left: failing now would make a caller send again
            log.error("an email was sent but could not be recorded in the audit trail: %s",
                      exc)
