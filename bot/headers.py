"""Header values that are safe to send, and the check every outgoing email passes.

Every header value Switchboard writes can carry text that someone outside chose: a
subject, a Slack or Matrix display name, a From name. Encoded words (RFC 2047) can
decode to CR/LF (``=?UTF-8?Q?=0A?=Bcc:…``), and Python's email package before 3.11.10 /
3.12.5 writes them back as raw line breaks when it folds the header (CVE-2024-6923), so
cleaning the visible text is not enough: values are decoded (repeatedly: a decoded word
can hold another), stripped of control characters, and the finished message is parsed
back to prove that it has exactly the headers it was given.
"""

from __future__ import annotations

import contextlib
import re
import unicodedata
from email import errors as email_errors
from email import policy
from email.header import decode_header, make_header
from email.message import EmailMessage
from email.parser import BytesHeaderParser
from email.utils import getaddresses

_ENCODED_WORD = re.compile(r"=\?[^?\s]*\?[bBqQ]\?[^?\s]*\?=")
# Characters that reorder or hide text: a name must read as it is.
_BIDI = dict.fromkeys(map(ord, "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"))
_ADDRESS_HEADERS = ("from", "to", "cc", "bcc", "reply-to", "sender")
_DECODE_ROUNDS = 4
SUBJECT_LIMIT = 250


class UnsafeHeader(ValueError):
    """An outgoing email whose headers would not survive being written as given."""


def _word(match: re.Match[str]) -> str:
    try:
        return str(make_header(decode_header(match.group(0))))
    except (ValueError, LookupError, UnicodeError, email_errors.HeaderParseError):
        return match.group(0)


def _decoded(value: str) -> str:
    # Word by word: decode_header on a whole value mangles the non-ASCII text around
    # the words. White space between two encoded words is not text (RFC 2047 6.2).
    for _ in range(_DECODE_ROUNDS):
        if "=?" not in value:
            break
        joined = re.sub(r"(\?=)\s+(?==\?)", r"\1", value)
        decoded = _ENCODED_WORD.sub(_word, joined)
        if decoded == value:
            break
        value = decoded
    # Words still encoded after that are not decoded by us, so must not be by the writer.
    return _ENCODED_WORD.sub(lambda m: m.group(0).replace("=?", "= ?"), value)


def header_text(value: str, limit: int = 0) -> str:
    """``value`` as one line of plain text: encoded words decoded, control and
    direction-changing characters gone, white space folded; cut to ``limit`` if given."""
    value = _decoded(str(value)).translate(_BIDI)
    value = "".join(" " if unicodedata.category(c) in ("Cc", "Zl", "Zp") else c
                    for c in value)
    value = " ".join(value.split())
    if limit and len(value) > limit:
        value = value[:limit - 1].rstrip() + "…"
    return value


def display_name(value: str) -> str:
    """A person's name as it may stand in an address header."""
    return header_text(value, limit=120)


def seal(message: EmailMessage) -> tuple[str, list[str]]:
    """Make ``message`` safe to send and return its envelope (sender, recipients).

    Every header is re-written from clean text; the message is then written and read
    back, and refused with UnsafeHeader unless the same headers come out. The envelope
    is taken from the sealed headers, so no injected Bcc can add a recipient; Bcc itself
    is removed from what is sent."""
    items = list(message.items())
    for name in {n for n, _ in items}:
        del message[name]
    for name, value in items:
        message[name] = _clean_header(name, str(value))
    recipients = [a for _, a in getaddresses(
        [str(v) for n in ("to", "cc", "bcc") for v in message.get_all(n, [])]) if a]
    senders = [a for _, a in getaddresses([str(message.get("return-path")
                                                or message.get("sender")
                                                or message.get("from") or "")]) if a]
    if not recipients or len(senders) != 1:
        raise UnsafeHeader("an outgoing email needs one sender and at least one recipient")
    del message["bcc"]
    del message["return-path"]  # the receiving server writes it from MAIL FROM
    written = BytesHeaderParser(policy=policy.compat32).parsebytes(message.as_bytes())
    expected = [n.lower() for n, _ in message.items()]
    if [n.lower() for n in written] != expected:
        raise UnsafeHeader("an outgoing email's headers changed when written "
                           f"({', '.join(sorted(set(written.keys()) - set(message.keys())))})")
    return senders[0], list(dict.fromkeys(recipients))


def _clean_header(name: str, value: str) -> str:
    if name.lower() not in _ADDRESS_HEADERS:
        return header_text(value, limit=SUBJECT_LIMIT if name.lower() == "subject" else 0)
    parts = []
    with contextlib.suppress(ValueError):
        for display, addr in getaddresses([value]):
            addr = header_text(addr)
            if not addr or any(c in addr for c in " <>,;\"\\"):
                continue
            name_text = display_name(display)
            parts.append(_quoted(name_text, addr))
    if not parts:
        raise UnsafeHeader(f"the {name} header of an outgoing email has no usable address")
    return ", ".join(parts)


def _quoted(name: str, addr: str) -> str:
    if not name:
        return addr
    escaped = name.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}" <{addr}>'
