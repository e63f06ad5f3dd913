"""Text helpers shared by the flows: folding quoted replies and signatures away."""

from __future__ import annotations

import re
from dataclasses import dataclass

# "On Tue, 3 Jan 2026 at 10:00, Alice <a@example.com> wrote:" and its common variants,
# possibly wrapped over two lines by the sender's client.
_ATTRIBUTION = re.compile(
    r"^(On\b.{0,200}\bwrote:|Le\b.{0,200}\ba écrit\s?:|Am\b.{0,200}\bschrieb\b.{0,80}:"
    r"|El\b.{0,200}\bescribió:)\s*$", re.IGNORECASE | re.DOTALL)
_OUTLOOK = re.compile(r"^\s*(-{2,}\s*Original Message\s*-{2,}|_{10,})\s*$", re.IGNORECASE)
_OUTLOOK_HEADER = re.compile(r"^\s*From:\s.+", re.IGNORECASE)
_SIGNATURE = re.compile(r"^-- ?$")
_MAILTO = re.compile(r"^<mailto:([^|>]+)(?:\|[^>]*)?>$")  # Slack's auto-linked addresses
_MOBILE = re.compile(r"^Sent from my \w+", re.IGNORECASE)


@dataclass(frozen=True)
class SplitText:
    body: str
    quoted: str
    signature: str


def split_reply(text: str) -> SplitText:
    """Separate what the sender wrote from the quoted tail and the signature.

    Nothing is thrown away: the quoted tail and signature are returned for folding.
    When the whole message looks quoted (someone forwarded with a note above an
    empty reply), the full text is kept as the body, so a mail with text is never
    shown empty.
    """
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    cut = _quote_start(lines)
    head, quoted = lines[:cut], lines[cut:]
    signature: list[str] = []
    for i, line in enumerate(head):
        if _SIGNATURE.match(line) or _MOBILE.match(line):
            head, signature = head[:i], head[i:]
            break
    body = "\n".join(head).strip()
    if not body:
        return SplitText(text.strip(), "", "")
    return SplitText(body, "\n".join(quoted).strip(), "\n".join(signature).strip())


def _quote_start(lines: list[str]) -> int:
    for i, line in enumerate(lines):
        joined = line if i + 1 >= len(lines) else f"{line} {lines[i + 1]}"
        if _ATTRIBUTION.match(line.strip()):
            return i
        if (line.strip() and not line.startswith(">") and _ATTRIBUTION.match(joined.strip())
                and i + 2 < len(lines) and lines[i + 2].startswith(">")):
            return i
        if _OUTLOOK.match(line) or (_OUTLOOK_HEADER.match(line) and i > 0
                                     and not lines[i - 1].strip()
                                     and any(_l.lower().startswith(("sent:", "date:"))
                                             for _l in lines[i + 1:i + 3])):
            return i
        if line.startswith(">") and all(not _l.strip() or _l.startswith(">")
                                        for _l in lines[i:]):
            return i
    return len(lines)


def shorten(text: str, limit: int, marker: str = "…") -> str:
    """``text`` cut to at most ``limit`` characters, at a line or word end where possible."""
    if len(text) <= limit:
        return text
    room = limit - len(marker)
    cut = text.rfind("\n", 0, room)
    if cut < room * 0.8:
        cut = text.rfind(" ", 0, room)
    if cut < room * 0.8:
        cut = room
    return text[:cut].rstrip() + marker


def human_size(size: int) -> str:
    if size < 1000:
        return f"{size} B"
    for unit in ("kB", "MB", "GB"):
        size_f = size / 1000
        if size_f < 1000 or unit == "GB":
            return f"{size_f:.1f} {unit}"
        size = int(size_f)
    return f"{size} B"


def unlinked(word: str) -> str:
    """An address as typed, from Slack's auto-link of it (``<mailto:a@b|a@b>``) if it is one."""
    mailto = _MAILTO.match(word)
    return mailto.group(1) if mailto else word
