"""Automatic replies per route (RFC 3834): "we got your email", once per sender per
period, never to automatic mail, mailing lists, or senders who cannot be shown to have
written (a forged From would make Switchboard mail an innocent address)."""

from __future__ import annotations

from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid

from bot.flows.outgoing import MARKER, automatic_reason, marker, reply_subject
from bot.headers import header_text
from bot.mail import InboundMail
from bot.model import Address
from bot.render import render

AUTOREPLY_LIMIT = 2000  # characters of a route's automatic reply
# Headers that say a message came through a list, or asks for no automatic answer.
_LIST_HEADERS = ("list-id", "list-unsubscribe", "list-post")
_SUPPRESS = ("all", "autoreply", "oof")


def no_autoreply(mail: InboundMail) -> str | None:
    """Why ``mail`` gets no automatic reply, or None."""
    if mail.sender is None:
        return "it has no sender"
    automatic = automatic_reason(mail)
    if automatic is not None or MARKER.lower() in mail.headers:
        return automatic or "it is Switchboard's own mail"
    if any(mail.headers.get(h) for h in _LIST_HEADERS):
        return "it came through a mailing list"
    suppress = mail.headers.get("x-auto-response-suppress", "").lower()
    if any(word in suppress for word in _SUPPRESS):
        return "it asks for no automatic reply (X-Auto-Response-Suppress)"
    if any(mail.headers.get(h) for h in ("x-autoreply", "x-autorespond")):
        return "it is an automatic reply itself"
    local = mail.sender.value.partition("@")[0]
    if local.startswith(("noreply", "no-reply", "donotreply", "do-not-reply", "mailer-daemon",
                         "postmaster", "owner-")) or local.endswith("-request"):
        return "its sender takes no replies"
    if not mail.auth.may_act:
        return "its sender is not authenticated"
    return None


def compose_autoreply(*, mail: InboundMail, text: str, mailbox: str, bot_email: str,
                      reply_domain: str, token: str) -> EmailMessage:
    """The automatic reply: from the mailbox's name, threaded onto the email, marked
    ``Auto-Submitted: auto-replied`` so that no other robot answers it, and answerable
    (its reply address leads into the conversation)."""
    assert mail.sender is not None
    name = header_text(mailbox, limit=80) or "Switchboard"
    msg = EmailMessage()
    msg["From"] = Address.email(bot_email).header_form(name)
    msg["To"] = mail.sender.header_form()
    msg["Reply-To"] = Address.email(f"reply+{token}@{reply_domain}").header_form(name)
    msg["Subject"] = reply_subject(mail.subject, token)
    msg["Date"] = format_datetime(datetime.now(UTC))
    msg["Message-ID"] = make_msgid(domain=reply_domain or None)
    msg["In-Reply-To"] = mail.message_id
    msg["References"] = " ".join([*mail.references[-19:], mail.message_id])
    msg["Auto-Submitted"] = "auto-replied"
    msg["X-Auto-Response-Suppress"] = "All"  # Exchange's way of saying the same
    msg[MARKER] = marker("autoreply", bot_email)
    msg.set_content(render("mail/autoreply.txt.j2", text=text, mailbox=name))
    return msg
