"""HTML mail bodies: sanitised with nh3 (ammonia), then rendered as readable text."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import nh3

# What survives sanitising: structure and links; no scripts, styles, images or forms.
_ALLOWED_TAGS = {"a", "b", "strong", "i", "em", "u", "p", "br", "div", "span", "ul", "ol",
                 "li", "blockquote", "pre", "code", "h1", "h2", "h3", "h4", "h5", "h6",
                 "table", "thead", "tbody", "tr", "td", "th", "hr"}
_ALLOWED_ATTRIBUTES = {"a": {"href"}}
_BLOCKS = {"p", "div", "ul", "ol", "table", "tr", "blockquote", "pre", "h1", "h2", "h3", "h4",
           "h5", "h6", "hr"}


def sanitise(html: str) -> str:
    """HTML with only harmless structure left (no script, style, handlers or remote images)."""
    return nh3.clean(html, tags=_ALLOWED_TAGS, attributes=_ALLOWED_ATTRIBUTES,
                     url_schemes={"http", "https", "mailto"}, link_rel=None,
                     clean_content_tags={"script", "style", "title", "head"})


# Bold and italic as Slack's and most readers' light markup; headings are lines of
# their own, which reads better in every client than markup around them.
_EMPHASIS = {"b": "*", "strong": "*", "i": "_", "em": "_"}


class _TextRenderer(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self.links: list[str | None] = []
        self.lists: list[list[int]] = []  # counters; [-1] marks an unordered list
        self.quote = 0
        self.pre = 0
        self.emphasis: list[int] = []  # where each open <b>/<i> began in ``out``

    def _newline(self, count: int = 1) -> None:
        if not self.out:
            return
        last = self.out[-1]
        have = len(last) - len(last.rstrip("\n"))
        if have < count:
            self.out.append("\n" * (count - have))

    def _prefix(self) -> None:
        if self.quote:
            self.out.append("> " * self.quote)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _BLOCKS:
            self._newline(2 if tag in {"p", "blockquote", "ul", "ol", "table", "hr"} else 1)
        if tag == "br":
            self.out.append("\n")
        elif tag == "blockquote":
            self.quote += 1
        elif tag == "pre":
            self.pre += 1
        elif tag in _EMPHASIS:
            self.emphasis.append(len(self.out))
        elif tag == "ul":
            self.lists.append([-1])
        elif tag == "ol":
            self.lists.append([0])
        elif tag == "li":
            self._newline(1)
            indent = "  " * max(0, len(self.lists) - 1)
            counter = self.lists[-1] if self.lists else [-1]
            if counter[0] >= 0:
                counter[0] += 1
                self.out.append(f"{indent}{counter[0]}. ")
            else:
                self.out.append(f"{indent}• ")
        elif tag == "a":
            self.links.append(dict(attrs).get("href"))
        elif tag == "hr":
            self.out.append("———")
        elif tag in {"td", "th"} and self.out and not self.out[-1].endswith("\n"):
            self.out.append(" | ")

    def handle_endtag(self, tag: str) -> None:
        if tag == "blockquote":
            self.quote = max(0, self.quote - 1)
        elif tag == "pre":
            self.pre = max(0, self.pre - 1)
        elif tag in _EMPHASIS and self.emphasis:
            self._emphasise(self.emphasis.pop(), _EMPHASIS[tag])
        elif tag in {"ul", "ol"} and self.lists:
            self.lists.pop()
        elif tag == "a" and self.links:
            href = self.links.pop()
            if href and not href.startswith("mailto:") and not self.out[-1].endswith(href):
                self.out.append(f" ({href})")
        if tag in _BLOCKS:
            self._newline(2 if tag in {"p", "blockquote", "ul", "ol", "table"} else 1)

    def _emphasise(self, start: int, mark: str) -> None:
        """Wrap what was written since ``start`` in ``mark``, inside its white space
        (``* bold *`` shows as stray asterisks); nothing around empty or multi-line text."""
        text = "".join(self.out[start:])
        inner = text.strip()
        if not inner or "\n" in inner or mark in inner:
            return
        lead = text[:len(text) - len(text.lstrip())]
        trail = text[len(text.rstrip()):]
        self.out[start:] = [f"{lead}{mark}{inner}{mark}{trail}"]

    def handle_data(self, data: str) -> None:
        if not self.pre:
            data = re.sub(r"\s+", " ", data)
            if not self.out or self.out[-1].endswith(("\n", " ")):
                data = data.lstrip()
        if not data:
            return
        if not self.out or self.out[-1].endswith("\n"):
            self._prefix()
        self.out.append(data)


def html_to_text(html: str) -> str:
    """Readable text (light markdown: *bold*, _italic_, bullets, links in brackets)."""
    renderer = _TextRenderer()
    renderer.feed(sanitise(html))
    renderer.close()
    text = "".join(renderer.out)
    text = re.sub(r"[ \t]+\n", "\n", text)
    text = re.sub(r"\n{3,}", "\n\n", text)
    return text.strip()
