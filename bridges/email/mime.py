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
from dataclasses import replace
from email import errors as email_errors
from email import policy
from email.header import decode_header, make_header
from email.message import EmailMessage, Message
from email.parser import BytesParser
from email.utils import getaddresses, parsedate_to_datetime
from typing import Any

from bot.headers import header_text
from bot.mail import BodyFormat, Envelope, InboundMail, MailAttachment
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
                 "authentication-results", "x-auto-response-suppress", "list-unsubscribe",
                 "list-post", "x-autoreply", "x-autorespond")
MAX_NESTING = 20
MAX_PARTS = 200
MAX_FORWARD_DEPTH = 3  # forwarded messages inside forwarded messages read this deep
MAX_FORWARDS_SHOWN = 10  # forwarded messages (digest entries) whose text is shown
FORWARD_TEXT_LIMIT = 4000
TOO_DEEP = "The message nests its parts too deeply; only its headers were read."
_UNREADABLE = (ValueError, IndexError, TypeError, AttributeError, LookupError,
               email_errors.MessageError)


def _header(msg: Message, name: str) -> str:
    """A header's first value as text, RFC 2047 decoded, whitespace collapsed."""
    values = _raw_values(msg, name)
    return " ".join(_decoded(values[0]).split()) if values else ""


def _raw_values(msg: Message, name: str) -> list[str]:
    """A header's values as they came, unfolded, with raw UTF-8 (SMTPUTF8 mail) read as
    UTF-8. Headers are read from these, not through the modern policy's structured
    parse: that cost more than the rest of the email (address headers most), and what
    is read from them here (getaddresses, Message-IDs, dates) reads the same syntax."""
    index: dict[str, list[str]] | None = msg.__dict__.get("_raw_index")
    if index is None:
        index = {}
        for key, value in msg.raw_items():
            text = "".join(str(value).splitlines())
            if any("\udc80" <= c <= "\udcff" for c in text):
                text = text.encode("ascii", "surrogateescape").decode("utf-8", "replace")
            index.setdefault(key.lower(), []).append(text)
        msg.__dict__["_raw_index"] = index
    return index.get(name, [])


def _decoded(words: str) -> str:
    """RFC 2047 encoded words (a display name's) as text."""
    if "=?" in words:
        with contextlib.suppress(ValueError, LookupError, UnicodeError,
                                 email_errors.HeaderParseError):
            words = str(make_header(decode_header(words)))
    return words


def _addresses(msg: Message, *names: str) -> tuple[list[tuple[str, Address]], list[str]]:
    found: list[tuple[str, Address]] = []
    bad: list[str] = []
    values = []
    for name in names:
        try:
            values += _raw_values(msg, name)
        except (ValueError, IndexError, TypeError, email_errors.HeaderParseError):
            bad.append(name)
    for display, addr in getaddresses(values):
        if not addr:
            continue
        try:
            found.append((" ".join(_decoded(display).split()), Address.email(addr)))
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


def _safe_name(text: str) -> str:
    """A file name as people will see it: one line, no control or direction-changing
    characters (``invoice\u202efdp.exe`` must not read as a PDF), no path separators."""
    return header_text(text).replace("/", "_").replace("\\", "_")


def _filename(part: Message) -> str:
    try:
        name = part.get_filename()
    except (ValueError, LookupError, TypeError):
        name = None
    name = _safe_name(str(name or ""))
    if name:
        return name[:200]
    ext = {"image/png": ".png", "image/jpeg": ".jpg", "image/gif": ".gif",
           "application/pdf": ".pdf", "text/calendar": ".ics"}.get(part.get_content_type(), "")
    return f"attachment{ext}"


def _walk(msg: Message, depth: int = 0) -> list[Message | list[Message]]:
    """The message's parts in order: leaves, and each multipart/alternative as one group
    of leaves (its versions of the same content). A forwarded message (message/rfc822,
    every entry of a multipart/digest) is a leaf: it is shown and kept whole, not mixed
    into this message's parts. Nesting is bounded (hostile mail nests thousands deep)."""
    if not msg.is_multipart() or msg.get_content_maintype() == "message":
        return [msg]
    if depth >= MAX_NESTING:
        return []
    payload = msg.get_payload()
    parts = [p for p in (payload if isinstance(payload, list) else []) if isinstance(p, Message)]
    if msg.get_content_subtype() == "alternative":
        group = [leaf for sub in parts for item in _walk(sub, depth + 1)
                 for leaf in (item if isinstance(item, list) else [item])]
        return [group]
    return [item for sub in parts for item in _walk(sub, depth + 1)]


def _is_inline_text(part: Message) -> bool:
    return (part.get_content_type() in ("text/plain", "text/html")
            and part.get_content_disposition() != "attachment" and not part.get_filename())


def _bodies(items: list[Message | list[Message]]) -> list[Message]:
    """The parts that make up the text shown, in order: every inline text part, and from
    each alternative group its plain text (else its HTML)."""
    chosen: list[Message] = []
    for item in items:
        if isinstance(item, list):
            texts = [p for p in item if _is_inline_text(p)]
            best = next((p for p in texts if p.get_content_type() == "text/plain"),
                        texts[0] if texts else None)
            if best is not None:
                chosen.append(best)
        elif _is_inline_text(item):
            chosen.append(item)
    return chosen


def _text_of(part: Message, notes: list[str]) -> str:
    text = _decode_text(part, notes)
    return html_to_text(text) if part.get_content_type() == "text/html" else text


def _forwarded(part: Message, max_attachment_bytes: int, depth: int
               ) -> tuple[str, InboundMail | None, bytes]:
    """A forwarded message: its bytes (kept as an .eml attachment) and, read as an email
    of its own, what is shown of it."""
    payload = part.get_payload()
    inner = payload[0] if isinstance(payload, list) and payload else None
    try:
        if isinstance(inner, Message):
            data = inner.as_bytes(policy=policy.compat32)
        else:
            raw_payload = part.get_payload(decode=True)
            data = raw_payload if isinstance(raw_payload, bytes) else b""
    except (*_UNREADABLE, RecursionError):
        data = b""
    if not data or depth >= MAX_FORWARD_DEPTH:
        return "", None, data
    mail = parse(data, max_attachment_bytes=max_attachment_bytes, _depth=depth + 1)
    name = _safe_name(mail.subject)[:80]
    return f"{name or 'forwarded message'}.eml", mail, data


def _all_names(mail: InboundMail) -> tuple[str, ...]:
    """Every attachment name in a forwarded message, its own forwards' included."""
    return tuple(n for a in mail.attachments for n in (a.filename, *a.contains))


def _forward_text(mail: InboundMail) -> str:
    when = time.strftime("%a, %d %b %Y %H:%M", time.gmtime(mail.date))
    sender = (f"{mail.sender_name} <{mail.sender.value}>" if mail.sender_name and mail.sender
              else mail.sender.value if mail.sender else "(unknown sender)")
    lines = ["---------- Forwarded message ----------", f"From: {sender}", f"Date: {when}",
             f"Subject: {mail.subject or '(no subject)'}"]
    body = "\n\n".join(t for t in (mail.body, mail.quoted) if t)
    if len(body) > FORWARD_TEXT_LIMIT:
        body = body[:FORWARD_TEXT_LIMIT].rstrip() + "\n[…the rest is in the attached message]"
    if mail.attachments:
        names = ", ".join(a.filename for a in mail.attachments)
        body += f"\n[attachments of the forwarded message: {names}]"
    return "\n".join(lines) + "\n\n" + body


def _fallback_id(sender: str, subject: str, date: str, body: str) -> str:
    digest = hashlib.sha256("\x00".join((sender, subject, date, body)).encode()).hexdigest()
    return f"<{digest[:40]}@no-message-id.switchboard.invalid>"


def parse(raw: bytes, *, max_attachment_bytes: int,
          envelope_recipients: tuple[Address, ...] = (), envelope_sender: str | None = None,
          _depth: int = 0) -> InboundMail:
    """Read ``raw`` (RFC 5322 bytes) into an InboundMail; never raises for bad content.

    The stdlib's modern header parser is the better reader but can itself fail on
    hostile headers (found by the fuzz tests); then the message is read again with the
    lenient compat32 policy, which treats headers as plain strings."""
    mail = _read(raw, max_attachment_bytes, envelope_recipients, _depth)
    return mail if envelope_sender is None else replace(mail, envelope_sender=envelope_sender)


class MimeReader:
    """The core's MailReader: ``parse`` with this deployment's attachment limit."""

    def __init__(self, max_attachment_bytes: int) -> None:
        self.max_attachment_bytes = max_attachment_bytes

    def read(self, raw: bytes, envelope: Envelope) -> InboundMail:
        return parse(raw, max_attachment_bytes=self.max_attachment_bytes,
                     envelope_recipients=envelope.recipients,
                     envelope_sender=envelope.peer.mail_from if envelope.peer else None)


class _Part(EmailMessage):
    """A part that reads its Content-Type (and its parameters) once: the modern policy
    parses a header anew on every access, and the walk asks each part's type a dozen
    times (a fifth of the ingest's CPU went there)."""

    _type: str | None = None

    def get_content_type(self) -> str:
        if self._type is None:
            self._type = super().get_content_type()
        return self._type

    def _get_params_preserve(self, failobj: Any, header: str) -> Any:
        params: dict[str, Any] = self.__dict__.setdefault("_params", {})
        key = header.lower()
        if key not in params:
            params[key] = super()._get_params_preserve(_NO_HEADER, header)  # type: ignore[misc]
        found = params[key]
        return failobj if found is _NO_HEADER else found


_NO_HEADER = object()

_MODERN = policy.default.clone(message_factory=_Part)


def _read(raw: bytes, max_attachment_bytes: int, envelope_recipients: tuple[Address, ...],
          _depth: int) -> InboundMail:
    try:
        return _parse(raw, _MODERN, max_attachment_bytes, envelope_recipients, [],
                      depth=_depth)
    except RecursionError:
        # The stdlib parser recurses once per nesting level: thousands of levels is an
        # attack, not an email. Its headers are still worth showing.
        log.warning("a message nested too deeply to parse; reading its headers only")
        return _parse(raw, policy.compat32, max_attachment_bytes, envelope_recipients,
                      [TOO_DEEP], headers_only=True, depth=_depth)
    except _UNREADABLE as exc:
        log.info("modern header parsing failed (%s); reading leniently", type(exc).__name__)
    try:
        return _parse(raw, policy.compat32, max_attachment_bytes, envelope_recipients,
                      ["Some headers are malformed; they are shown as they came."],
                      depth=_depth)
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
           headers_only: bool = False, depth: int = 0) -> InboundMail:
    msg = BytesParser(policy=how).parsebytes(raw, headersonly=headers_only)
    items = [] if headers_only else _walk(msg)
    if msg.is_multipart() and not items:
        notes.append(TOO_DEEP)
    leaves = [leaf for item in items for leaf in (item if isinstance(item, list) else [item])]
    if len(leaves) > MAX_PARTS:
        notes.append(f"The message has {len(leaves)} parts; only the first {MAX_PARTS} "
                     "were read.")
        leaves = leaves[:MAX_PARTS]
        kept = {id(p) for p in leaves}
        items = [[p for p in i if id(p) in kept] if isinstance(i, list) else i
                 for i in items if (isinstance(i, list) or id(i) in kept)]
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

    bodies = _bodies(items)
    texts = [_text_of(part, notes) for part in bodies]
    text = "\n\n".join(t.strip("\n") for t in texts if t.strip())
    fmt = BodyFormat.NONE
    if bodies:
        fmt = BodyFormat.TEXT if any(p.get_content_type() == "text/plain" for p in bodies) \
            else BodyFormat.HTML

    attachments: list[MailAttachment] = []
    forwards: list[str] = []
    forwarded = 0
    for part in leaves:
        if any(part is b for b in bodies):
            continue
        ctype = part.get_content_type()
        if _is_inline_text(part):
            continue  # another version (alternative) of a body part shown
        name = _filename(part)
        if part.get_content_maintype() == "message" and part.get_content_subtype() in (
                "rfc822", "global"):
            fname, inner, content = _forwarded(part, max_attachment_bytes, depth)
            name = fname or name
            contains = _all_names(inner) if inner is not None else ()
            forwarded += 1
            if inner is not None and len(forwards) < MAX_FORWARDS_SHOWN:
                forwards.append(_forward_text(inner))
            ctype = "message/rfc822"
        else:
            contains = ()
            try:
                payload = part.get_payload(decode=True)
            except (ValueError, TypeError, AssertionError):
                payload = None
            content = payload if isinstance(payload, bytes) else b""
        inline = part.get_content_disposition() == "inline" or bool(part.get("content-id"))
        cid = _header(part, "content-id").strip("<>")
        if len(content) > max_attachment_bytes:
            notes.append(f"The attachment {name!r} ({len(content) / 1e6:.1f} MB) is over the "
                         f"{max_attachment_bytes / 1e6:.1f} MB limit and was not posted.")
            attachments.append(MailAttachment(name, ctype, len(content), b"", inline, cid,
                                              contains))
            continue
        attachments.append(MailAttachment(name, ctype, len(content), content, inline, cid,
                                          contains))
    if forwarded > len(forwards):
        notes.append(f"{forwarded - len(forwards)} more forwarded message(s) are attached "
                     "but not shown here.")
    # What the sender wrote is folded (quotes, signature); what they forwarded is shown
    # as it came, after it.
    split = split_reply(text)
    if forwards:
        split = replace(split, body="\n\n".join(t for t in (split.body, *forwards) if t))

    if not split.body and not attachments:
        notes.append("The message has no text.")
    delivered: list[Address] = []
    if not envelope_recipients:
        # Only the topmost of each: the one the server that delivered it here added.
        for name in ("delivered-to", "x-original-to"):
            found, _ = _addresses(msg, name)
            delivered += [a for _, a in found[:1]]
    ids = _message_ids(_header(msg, "message-id"))
    message_id = ids[0] if ids else _fallback_id(str(sender), subject, date_text, text)
    headers = {h: _header(msg, h) for h in _KEPT_HEADERS if _raw_values(msg, h)}
    return InboundMail(
        message_id=message_id, has_message_id=bool(ids), sender=sender,
        sender_name=sender_name, to=tuple(a for _, a in to), cc=tuple(a for _, a in cc),
        subject=subject, date=date, body=split.body, quoted=split.quoted,
        signature=split.signature, body_format=fmt,
        in_reply_to=next(iter(_message_ids(_header(msg, "in-reply-to"))), ""),
        references=tuple(_message_ids(_header(msg, "references"))),
        attachments=tuple(attachments), notes=tuple(notes), headers=headers, size=len(raw),
        envelope_recipients=envelope_recipients, delivered_to=tuple(delivered),
        report=_report_type(msg, leaves),
        delivery_status=_delivery_status(msg),
    )


_REPORT_PARTS = {"message/delivery-status": "delivery-status",
                 "message/global-delivery-status": "delivery-status",
                 "message/disposition-notification": "disposition-notification",
                 "message/feedback-report": "feedback-report"}


DSN_FIELDS = ("final-recipient", "original-recipient", "action", "status",
              "diagnostic-code", "remote-mta")
DSN_RECIPIENTS = 20  # per-recipient blocks read of one report


def _delivery_status(msg: Message) -> tuple[dict[str, str], ...]:
    """The per-recipient blocks of a message/delivery-status part (the first block is
    the reporting MTA's, and has no Action)."""
    for part in msg.walk():
        if part.get_content_type() not in ("message/delivery-status",
                                           "message/global-delivery-status"):
            continue
        blocks = part.get_payload()
        if not isinstance(blocks, list):
            return ()
        found = []
        for block in blocks[:DSN_RECIPIENTS + 1]:
            if not isinstance(block, Message):
                continue
            fields = {name: " ".join(str(block.get(name, "")).split())[:500]
                      for name in DSN_FIELDS if block.get(name)}
            if "action" in fields:
                found.append(fields)
        return tuple(found)
    return ()


def _report_type(msg: Message, leaves: list[Message]) -> str:
    """A delivery, read or abuse report (RFC 6522 multipart/report, or its parts
    anywhere in the message), by its type."""
    if msg.get_content_type() == "multipart/report":
        return str(msg.get_param("report-type") or "report").lower()[:40]
    for part in leaves:
        found = _REPORT_PARTS.get(part.get_content_type())
        if found:
            return found
    return ""
