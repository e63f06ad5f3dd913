"""Reading a bounce of Switchboard's own mail: a delivery status notification (RFC 3464)
or one of the usual non-standard shapes, as what the replier needs to hear (did it fail,
and why, in the remote server's words)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from bot.mail import InboundMail

# Subjects of bounces sent without a delivery-status part (old Exim, qmail, Exchange's
# plain-text variants, and most webmail providers).
_FAILURE_SUBJECT = re.compile(
    r"undeliver|returned mail|delivery (status notification \(failure\)|failure|failed|"
    r"has failed)|mail delivery (failed|system)|failure notice|could not be delivered|"
    r"non[- ]?delivery", re.IGNORECASE)
_DIAGNOSTIC = re.compile(r"\b[45]\d\d[ -][245]\.\d{1,3}\.\d{1,3}\b.*|\b[45]\.\d\.\d\b.*|"
                         r".*(user unknown|no such user|mailbox (unavailable|not found)|"
                         r"does not exist|address rejected|recipient rejected).*",
                         re.IGNORECASE)
REASON_LIMIT = 300


@dataclass(frozen=True)
class Bounce:
    failed: bool  # False: only delayed, or relayed; nothing to tell yet
    reason: str  # the remote server's words, shortened
    recipient: str = ""


def read_bounce(mail: InboundMail) -> Bounce | None:
    """What a bounce says; None when it does not look like one at all."""
    for block in mail.delivery_status:
        action = block.get("action", "").lower()
        if action != "failed":
            continue
        words = block.get("diagnostic-code", "").partition(";")[2].strip() or \
            f"status {block.get('status', 'unknown')}"
        recipient = block.get("final-recipient", "").partition(";")[2].strip()
        return Bounce(True, _short(words), recipient)
    if mail.delivery_status:
        actions = sorted({b.get("action", "?").lower() for b in mail.delivery_status})
        return Bounce(False, f"a delivery report ({', '.join(actions)})")
    if not _FAILURE_SUBJECT.search(mail.subject):
        return None
    for line in (mail.body + "\n" + mail.quoted).splitlines():
        found = _DIAGNOSTIC.search(line)
        if found:
            return Bounce(True, _short(found.group(0)))
    return Bounce(True, _short(mail.subject))


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= REASON_LIMIT else text[:REASON_LIMIT - 1] + "…"
