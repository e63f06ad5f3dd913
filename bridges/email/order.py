"""Which emails must keep their order: those of one conversation. Read from the headers
alone (before the email is parsed), so that emails of different conversations can be
bridged side by side while each conversation keeps mailbox order."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from email import policy
from email.parser import BytesHeaderParser

_IDS = re.compile(r"<[^<>\s]{1,998}>")
_TOKEN_ADDRESS = re.compile(r"\breply\+([a-z2-7]{8,64})@", re.IGNORECASE)
_SUBJECT_TOKEN = re.compile(r"\[sb:([a-z2-7]{8,64})\]", re.IGNORECASE)
_RECIPIENT_HEADERS = ("To", "Cc", "Delivered-To", "X-Original-To")
MAX_KEYS = 100  # a References header of thousands of ids is an attack, not a thread


def conversation_keys(raw: bytes) -> frozenset[str]:
    """Keys shared by emails that may belong to one conversation: every Message-ID it
    names (its own, In-Reply-To, References) and the reply token it was sent back with.
    An email naming none is keyed by its bytes (a copy of it still waits for it)."""
    keys: dict[str, None] = {}  # its own Message-ID first, then reply tokens, then answers
    try:
        headers = BytesHeaderParser(policy=policy.compat32).parsebytes(raw)
        _ids(keys, headers.get_all("Message-ID", []))
        for name in _RECIPIENT_HEADERS:
            for value in headers.get_all(name, []):
                keys.update(dict.fromkeys("token:" + t.lower()
                                          for t in _TOKEN_ADDRESS.findall(str(value))))
        keys.update(dict.fromkeys("token:" + t.lower()
                                  for t in _SUBJECT_TOKEN.findall(str(headers.get("Subject", "")))))
        _ids(keys, [*headers.get_all("In-Reply-To", []), *headers.get_all("References", [])])
    except Exception:  # hostile headers: the email still goes, in a lane of its own
        keys.clear()
    return frozenset(list(keys)[:MAX_KEYS] or ["raw:" + hashlib.sha256(raw).hexdigest()])


def _ids(keys: dict[str, None], values: Sequence[object]) -> None:
    for value in values:
        keys.update(dict.fromkeys("id:" + i.lower() for i in _IDS.findall(str(value))))
