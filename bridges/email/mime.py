"""Reading raw email into an InboundMail, whatever shape it arrives in.

``parse`` never raises for bad content: what cannot be read becomes a note that
readers see (unknown charset, damaged structure, attachment over the limit), so
a hostile or broken message cannot stop the ingest loop.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import re
import time
from email import errors as email_errors
from email import policy
from email.header import decode_header, make_header
from email.message import EmailMessage, Message
from email.parser import BytesParser
from email.utils import getaddresses, parsedate_to_datetime

from bot.mail import BodyFormat, InboundMail, MailAttachment
from bot.model import Address, AddressError
from bot.text import split_reply
from bridges.email.html import html_to_text

log = logging.getLogger(__name__)
_MSGID = re.compile(r"<[^<>\s]+>")
_DAMAGE = (email_errors.StartBoundaryNotFoundDefect, email_errors.CloseBoundaryNotFoundDefect,
           email_errors.MultipartInvariantViolationDefect,
           email_errors.MissingHeaderBodySeparatorDefect,
           email_errors.InvalidBase64PaddingDefect, email_errors.InvalidBase64CharactersDefect,
           email_errors.InvalidBase64LengthDefect)
# Headers the loop and trust rules read later; kept lowercased.
_KEPT_HEADERS = ("auto-submitted", "precedence", "list-id", "return-path", "x-switchboard",
                 "authentication-results", "x-auto-response-suppress")
MAX_NESTING = 20
MAX_PARTS = 200
TOO_DEEP = "The message nests its parts too deeply; only its headers were read."
_UNREADABLE = (ValueError, IndexError, TypeError, AttributeError, LookupError,
               email_errors.MessageError)


def _header(msg: Message, name: str) -> str:
    """A header as text (RFC 2047 decoded where the policy did not already)."""
    value = str(msg.get(name) or "")
    if "=?" in value:
        with contextlib.suppress(ValueError, LookupError, UnicodeError,
                                 email_errors.HeaderParseError):
            value = str(make_header(decode_header(value)))
    return " ".join(value.split())


def _addresses(msg: Message, *names: str) -> tuple[list[tuple[str, Address]], list[str]]:
    found: list[tuple[str, Address]] = []
    bad: list[str] = []
    values = []
    for name in names:
        try:
            values += [str(v) for v in msg.get_all(name, [])]
        except (ValueError, IndexError, TypeError, email_errors.HeaderParseError):
            bad.append(name)
    for display, addr in getaddresses(values):
        if not addr:
            continue
        try:
            found.append((" ".join(display.split()), Address.email(addr)))
        except AddressError:
            bad.append(addr)
    return found, bad


def _message_ids(text: str) -> list[str]:
    return _MSGID.findall(text)


def _decode_text(part: Message, notes: list[str]) -> str:
    try:
        content = part.get_content() if isinstance(part, EmailMessage) else None
        if isinstance(content, str):
            return content
    except (LookupError, UnicodeError, ValueError, AssertionError):
        pass
    payload = part.get_payload(decode=True)
    data = payload if isinstance(payload, bytes) else str(part.get_payload()).encode()
    charset = part.get_content_charset() or "us-ascii"
    try:
        return data.decode(charset)
    except LookupError:
        notes.append(f"The text was in an unknown character set ({charset!r}) and is shown "
                     "as closely as it could be read.")
    except UnicodeDecodeError:
        notes.append(f"The text was not valid {charset}; unreadable characters are marked �.")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("cp1252", errors="replace")


def _filename(part: Message) -> str:
    try:
        name = part.get_filename()
    except (ValueError, LookupError, TypeError):
        name = None
    name = " ".join(str(name or "").split()).replace("/", "_").replace("\\", "_")
    if name:
        return name[:200]
    ext = {"image/png": ".png", "image/jpeg": ".jpg", "image/gif": ".gif",
           "application/pdf": ".pdf", "text/calendar": ".ics"}.get(part.get_content_type(), "")
    return f"attachment{ext}"


def _walk(msg: Message, depth: int = 0) -> list[Message]:
    """Leaf parts in order, with nesting bounded (hostile mail nests thousands deep)."""
    if not msg.is_multipart():
        return [msg]
    if depth >= MAX_NESTING:
        return []
    payload = msg.get_payload()
    parts = payload if isinstance(payload, list) else []
    return [leaf for sub in parts if isinstance(sub, Message) for leaf in _walk(sub, depth + 1)]


def _choose_body(leaves: list[Message]) -> tuple[Message | None, Message | None]:
    plain = html = None
    for part in leaves:
        disposition = (part.get_content_disposition() or "inline")
        if disposition == "attachment" or part.get_filename():
            continue
        ctype = part.get_content_type()
        if ctype == "text/plain" and plain is None:
            plain = part
        elif ctype == "text/html" and html is None:
            html = part
    return plain, html


def _fallback_id(sender: str, subject: str, date: str, body: str) -> str:
    digest = hashlib.sha256("\x00".join((sender, subject, date, body)).encode()).hexdigest()
    return f"<{digest[:40]}@no-message-id.switchboard.invalid>"


def parse(raw: bytes, *, max_attachment_bytes: int,
          envelope_recipients: tuple[Address, ...] = ()) -> InboundMail:
    """Read ``raw`` (RFC 5322 bytes) into an InboundMail; never raises for bad content.

    The stdlib's modern header parser is the better reader but can itself fail on
    hostile headers (found by the fuzz tests); then the message is read again with the
    lenient compat32 policy, which treats headers as plain strings."""
    try:
        return _parse(raw, policy.default, max_attachment_bytes, envelope_recipients, [])
    except RecursionError:
        # The stdlib parser recurses once per nesting level: thousands of levels is an
        # attack, not an email. Its headers are still worth showing.
        log.warning("a message nested too deeply to parse; reading its headers only")
        return _parse(raw, policy.compat32, max_attachment_bytes, envelope_recipients,
                      [TOO_DEEP], headers_only=True)
    except _UNREADABLE as exc:
        log.info("modern header parsing failed (%s); reading leniently", type(exc).__name__)
    try:
        return _parse(raw, policy.compat32, max_attachment_bytes, envelope_recipients,
                      ["Some headers are malformed; they are shown as they came."])
    except (*_UNREADABLE, RecursionError):
        log.warning("an unreadable message was kept as raw text", exc_info=True)
    text = raw.decode("utf-8", errors="replace")
    return InboundMail(
        message_id=_fallback_id("", "", "", text), has_message_id=False, sender=None,
        sender_name="", to=(), cc=(), subject="", date=time.time(), body=text[:20000],
        quoted="", signature="", body_format=BodyFormat.TEXT,
        notes=("The message could not be read as email; it is shown as raw text.",),
        size=len(raw), envelope_recipients=envelope_recipients)


def _parse(raw: bytes, how: policy.Policy, max_attachment_bytes: int,
           envelope_recipients: tuple[Address, ...], notes: list[str],
           headers_only: bool = False) -> InboundMail:
    msg = BytesParser(policy=how).parsebytes(raw, headersonly=headers_only)
    leaves = [] if headers_only else _walk(msg)
    if msg.is_multipart() and not leaves:
        notes.append(TOO_DEEP)
    if len(leaves) > MAX_PARTS:
        notes.append(f"The message has {len(leaves)} parts; only the first {MAX_PARTS} "
                     "were read.")
        leaves = leaves[:MAX_PARTS]
    damaged = any(isinstance(d, _DAMAGE) for p in [msg, *leaves] for d in p.defects)
    if damaged:
        notes.append("The message is damaged or incomplete; showing what could be read.")

    senders, bad_from = _addresses(msg, "from")
    to, _ = _addresses(msg, "to")
    cc, _ = _addresses(msg, "cc")
    if bad_from or not senders:
        notes.append("The sender's address could not be read.")
    sender_name, sender = senders[0] if senders else ("", None)
    subject = _header(msg, "subject")
    date_text = _header(msg, "date")
    try:
        date = parsedate_to_datetime(date_text).timestamp() if date_text else time.time()
    except (ValueError, TypeError, OverflowError, IndexError):
        date = time.time()

    plain, html = _choose_body(leaves)
    if plain is not None:
        text, fmt = _decode_text(plain, notes), BodyFormat.TEXT
    elif html is not None:
        text, fmt = html_to_text(_decode_text(html, notes)), BodyFormat.HTML
    else:
        text, fmt = "", BodyFormat.NONE
    split = split_reply(text)

    attachments: list[MailAttachment] = []
    for part in leaves:
        if part is plain or part is html:
            continue
        ctype = part.get_content_type()
        if ctype in ("text/plain", "text/html") and not part.get_filename() \
                and part.get_content_disposition() != "attachment":
            continue  # an alternative body we did not choose
        try:
            payload = part.get_payload(decode=True)
        except (ValueError, TypeError, AssertionError):
            payload = None
        content = payload if isinstance(payload, bytes) else b""
        name = _filename(part)
        inline = part.get_content_disposition() == "inline" or bool(part.get("content-id"))
        cid = _header(part, "content-id").strip("<>")
        if len(content) > max_attachment_bytes:
            notes.append(f"The attachment {name!r} ({len(content) / 1e6:.1f} MB) is over the "
                         f"{max_attachment_bytes / 1e6:.1f} MB limit and was not posted.")
            attachments.append(MailAttachment(name, ctype, len(content), b"", inline, cid))
            continue
        attachments.append(MailAttachment(name, ctype, len(content), content, inline, cid))

    if not split.body and not attachments:
        notes.append("The message has no text.")
    ids = _message_ids(_header(msg, "message-id"))
    message_id = ids[0] if ids else _fallback_id(str(sender), subject, date_text, text)
    headers = {h: _header(msg, h) for h in _KEPT_HEADERS if msg.get(h) is not None}
    return InboundMail(
        message_id=message_id, has_message_id=bool(ids), sender=sender,
        sender_name=sender_name, to=tuple(a for _, a in to), cc=tuple(a for _, a in cc),
        subject=subject, date=date, body=split.body, quoted=split.quoted,
        signature=split.signature, body_format=fmt,
        in_reply_to=next(iter(_message_ids(_header(msg, "in-reply-to"))), ""),
        references=tuple(_message_ids(_header(msg, "references"))),
        attachments=tuple(attachments), notes=tuple(notes), headers=headers, size=len(raw),
        envelope_recipients=envelope_recipients,
    )
