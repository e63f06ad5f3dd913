"""Emails Switchboard sends on someone's behalf: a reply from chat, threaded onto the
conversation, with its history quoted and a reply address that leads back to chat."""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid

from bot.headers import header_text
from bot.mail import InboundMail
from bot.model import Address, HistoryEntry
from bot.render import render

MARKER = "X-Switchboard"  # on everything Switchboard sends: its own mail is never re-bridged
SENDER_HEADER = "X-Switchboard-Sender"  # the chat account that really wrote a relayed email
BOUNCE_SUBJECT_LIMIT = 60  # a bounce repeats no more of the offending mail than this


def reply_subject(subject: str, token: str, is_reply: bool = True) -> str:
    subject = header_text(subject, limit=200) or "your email"
    if is_reply and not subject.lower().startswith("re:"):
        subject = f"Re: {subject}"
    # The token again in the subject: some providers drop plus-addressing.
    return " ".join(f"{subject} [sb:{token}]".split())


def compose_reply(*, bot_email: str, reply_domain: str, sender_name: str, to: Address,
                  text: str, subject: str, token: str, message_key: str,
                  answering: HistoryEntry | None, history: Sequence[HistoryEntry],
                  sender: Address | None = None, bounce_token: str = "",
                  cc: Sequence[Address] = ()) -> EmailMessage:
    """The email: From the bot in the replier's name, Reply-To the conversation's reply
    address, In-Reply-To/References onto what it answers, text and HTML parts.

    A display name is whatever its owner typed ("Alice (Finance)"): the chat account
    that really wrote (``sender``) is named in a header and in the text."""
    sender_name = header_text(sender_name, limit=80) or (sender.value if sender else "")
    original = answering.meta.get("message_id", "") if answering else ""
    references = answering.meta.get("references", "").split() if answering else []
    references = [r for r in [*references, original] if r]
    msg = EmailMessage()
    msg["From"] = Address.email(bot_email).header_form(f"{sender_name} via Switchboard")
    msg["To"] = to.header_form()
    if cc:
        msg["Cc"] = ", ".join(a.header_form() for a in cc)
    msg["Reply-To"] = Address.email(f"reply+{token}@{reply_domain}").header_form(sender_name)
    msg["Subject"] = reply_subject(subject, token, is_reply=answering is not None)
    if original:
        msg["In-Reply-To"] = original
    if references:
        msg["References"] = " ".join(references[-20:])
    account = _relayed(msg, bot_email=bot_email, reply_domain=reply_domain,
                       message_key=message_key, bounce_token=bounce_token, sender=sender)
    context = {"name": sender_name, "account": account, "text": text,
               "history": list(history), "answering": answering, "to": to.value}
    msg.set_content(render("mail/reply.txt.j2", **context))
    msg.add_alternative(render("mail/reply.html.j2", **context), subtype="html")
    return msg


def _relayed(msg: EmailMessage, *, bot_email: str, reply_domain: str, message_key: str,
             bounce_token: str, sender: Address | None) -> str:
    """The headers every email sent on someone's behalf carries: its date and our own
    Message-ID, the marker, the return path, who really wrote it. Returns that account
    as the text says it ("" for none)."""
    msg["Date"] = format_datetime(datetime.now(UTC))
    msg["Message-ID"] = make_msgid(idstring=message_key, domain=reply_domain)
    msg[MARKER] = marker(message_key, bot_email)
    if bounce_token:
        # The envelope sender (VERP): a bounce comes back to an address naming this
        # delivery. seal() takes it as MAIL FROM and drops the header.
        msg["Return-Path"] = f"<{bounce_address(bounce_token, reply_domain)}>"
    if sender is None:
        return ""
    msg[SENDER_HEADER] = str(sender)
    return f"{sender.value} on {sender.network.value.title()}"


def compose_forward(*, bot_email: str, reply_domain: str, sender_name: str, to: Address,
                    note: str, token: str, message_key: str, original: HistoryEntry,
                    sender: Address | None = None, bounce_token: str = "") -> EmailMessage:
    """An email forwarded to someone new: the note above the original quoted inline, and
    the original attached (``message/rfc822``) as a mail client forwards it. Replies come
    back to the conversation's reply address, like a reply's."""
    sender_name = header_text(sender_name, limit=80) or (sender.value if sender else "")
    msg = EmailMessage()
    msg["From"] = Address.email(bot_email).header_form(f"{sender_name} via Switchboard")
    msg["To"] = to.header_form()
    msg["Reply-To"] = Address.email(f"reply+{token}@{reply_domain}").header_form(sender_name)
    subject = header_text(original.subject, limit=200) or "an email"
    if not subject.lower().startswith(("fwd:", "fw:")):
        subject = f"Fwd: {subject}"
    msg["Subject"] = " ".join(f"{subject} [sb:{token}]".split())
    original_id = original.meta.get("message_id", "")
    if original_id:
        msg["References"] = original_id  # as mail clients do: it names what it forwards
    account = _relayed(msg, bot_email=bot_email, reply_domain=reply_domain,
                       message_key=message_key, bounce_token=bounce_token, sender=sender)
    to_list, cc_list = original.meta.get("to", "").split(), original.meta.get("cc", "").split()
    context = {"name": sender_name, "account": account, "note": note, "original": original,
               "to": to_list, "cc": cc_list}
    msg.set_content(render("mail/forward.txt.j2", **context))
    msg.add_alternative(render("mail/forward.html.j2", **context), subtype="html")
    msg.add_attachment(_original_message(original, to_list, cc_list),
                       filename=_eml_name(original.subject))
    return msg


def _original_message(original: HistoryEntry, to: Sequence[str], cc: Sequence[str]
                      ) -> EmailMessage:
    """The forwarded email as an attachment: its headers and text as history keeps them
    (the raw bytes stay in the mailbox; attachments are named, not carried)."""
    inner = EmailMessage()
    inner["From"] = original.sender.header_form()
    if to:
        inner["To"] = ", ".join(to)
    if cc:
        inner["Cc"] = ", ".join(cc)
    inner["Subject"] = header_text(original.subject, limit=200) or "(no subject)"
    inner["Date"] = format_datetime(datetime.fromtimestamp(original.at, UTC))
    if original.meta.get("message_id"):
        inner["Message-ID"] = original.meta["message_id"]
    text = original.text
    if original.meta.get("quoted"):
        text += "\n\n" + original.meta["quoted"]
    if original.attachments:
        text += "\n\n[attachments, not forwarded: " + ", ".join(
            a.filename for a in original.attachments) + "]"
    inner.set_content(text)
    return inner


def _eml_name(subject: str) -> str:
    stem = re.sub(r"[^\w .-]+", "", header_text(subject, limit=60)).strip() or "email"
    return f"{stem}.eml"


BOUNCE_PREFIX = "bounce+"


def bounce_address(token: str, reply_domain: str) -> str:
    return f"{BOUNCE_PREFIX}{token}@{reply_domain}"


_BOUNCE_SUBJECT = "bounce:"


def bounce_token_for(delivery_id: str) -> str:
    """What a bounce token is issued for (where a reply token names a conversation)."""
    return f"{_BOUNCE_SUBJECT}{delivery_id}"


def delivery_of_bounce(subject: str) -> str | None:
    """The delivery a bounce token was issued for; None for any other token."""
    return subject.removeprefix(_BOUNCE_SUBJECT) if subject.startswith(_BOUNCE_SUBJECT) \
        else None


def marker(key: str, bot_email: str) -> str:
    """The marker header's value: what it is, and which Switchboard sent it."""
    return f"{key}; via={bot_email}"


def automatic_reason(mail: InboundMail, bot_email: str = "") -> str | None:
    """Why mail must not be bridged or answered automatically (RFC 3834), or None:
    auto-submitted, bulk or list mail, a null return path, or this Switchboard's own
    mail coming back. People's replies relayed by another Switchboard do pass: they are
    not automatic, so a conversation crosses one hop and no loop forms."""
    headers = mail.headers
    auto = headers.get("auto-submitted", "no").strip().lower()
    if auto != "no":
        return f"it is automatic mail (Auto-Submitted: {auto})"
    precedence = headers.get("precedence", "").strip().lower()
    if precedence in ("bulk", "list", "junk"):
        return f"it is {precedence} mail (Precedence: {precedence})"
    if mail.envelope_sender == "" or headers.get("return-path", "").strip() == "<>":
        return "it has a null return path (a bounce or notification)"
    if mail.report:
        return f"it is an automatic report ({mail.report})"
    if _looks_like_bounce(mail):
        return "it is a delivery failure notice from a mail server"
    own = headers.get(MARKER.lower(), "")
    if own and (not bot_email or own.endswith(f"via={bot_email}")):
        return "it is Switchboard's own mail coming back"
    return None


# What mail servers call themselves when they return mail, and what they write in the
# subject (Postfix, Exim, Sendmail, qmail, Exchange, Gmail, Courier, Domino, ...).
_DAEMONS = ("mailer-daemon", "postmaster", "mail-daemon", "maildaemon", "mail.delivery",
            "mail-delivery", "mdaemon", "bounce", "bounces", "nobody", "noreply-dmarc")
_FAILURE_SUBJECT = re.compile(
    r"undeliver|undelivered|not delivered|delivery (status notification|failure|failed|"
    r"has failed|problem|notification)|mail delivery (failed|failure|system|subsystem)|"
    r"returned mail|returned to sender|failure notice|non[- ]?delivery|delivery report|"
    r"could not be delivered|nondeliverable|warning: message .* delayed|"
    r"unzustellbar|non remis|non recapitabile|no se puede entregar|onbestelbaar",
    re.IGNORECASE)


def _looks_like_bounce(mail: InboundMail) -> bool:
    """A bounce in one of the usual non-standard shapes: a mail server's address with a
    failure subject (many servers send no report part, or drop Auto-Submitted)."""
    if mail.sender is None:
        return bool(_FAILURE_SUBJECT.search(mail.subject))
    local = mail.sender.value.partition("@")[0]
    daemon = local.startswith(_DAEMONS) or "mailer-daemon" in mail.sender_name.lower() \
        or "mail delivery" in mail.sender_name.lower()
    return daemon and bool(_FAILURE_SUBJECT.search(mail.subject))


def is_automatic(mail: InboundMail) -> bool:
    """Mail that must never get an automatic answer, such as a bounce."""
    return automatic_reason(mail) is not None or MARKER.lower() in mail.headers


def bounce_message(mail: InboundMail, reason: str, bot_email: str) -> EmailMessage:
    """A polite note to the sender that their email was not delivered, and why."""
    assert mail.sender is not None
    msg = EmailMessage()
    msg["From"] = Address.email(bot_email).header_form("Switchboard")
    # The address alone: the display name and most of the subject are the sender's text.
    subject = bounce_subject(mail)
    msg["To"] = mail.sender.header_form()
    msg["Subject"] = f"Not delivered: {subject}"
    msg["Date"] = format_datetime(datetime.now(UTC))
    msg["Message-ID"] = make_msgid(domain=bot_email.partition("@")[2] or None)
    msg["In-Reply-To"] = mail.message_id
    msg["References"] = mail.message_id
    msg["Auto-Submitted"] = "auto-replied"  # RFC 3834: never answer this one
    msg[MARKER] = marker("bounce", bot_email)
    msg.set_content(render("mail/bounce.txt.j2", subject=subject, reason=reason))
    return msg


def bounce_subject(mail: InboundMail) -> str:
    return header_text(mail.subject, limit=BOUNCE_SUBJECT_LIMIT) or "(no subject)"
