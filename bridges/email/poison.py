"""Messages that fail every time they are bridged: kept aside with the reason, so one
hostile or broken email can never stop a mailbox."""

from __future__ import annotations

import contextlib
import hashlib
import time
from email import policy
from email.parser import BytesHeaderParser

from bot.headers import header_text
from bot.model import Refusal

MAX_FAILURES = 3  # attempts at one message before it is set aside


def aside_key(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()[:32]


def refusal_for(raw: bytes, source: str, reason: str) -> Refusal:
    """A refusal record for ``raw``, read as leniently as possible (it already failed)."""
    fields = {"message-id": "", "from": "", "subject": ""}
    # It is the failing message: whatever cannot be read stays empty; the bytes are kept.
    with contextlib.suppress(Exception):
        headers = BytesHeaderParser(policy=policy.compat32).parsebytes(raw[:200_000])
        for name in fields:
            fields[name] = header_text(str(headers.get(name) or ""), 200)
    return Refusal(time.time(), source, fields["message-id"], fields["from"],
                   fields["subject"], header_text(reason, 400))


def failure_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:200]
