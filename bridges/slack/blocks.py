"""Block Kit for Switchboard's Slack posts, built with slack_sdk's models so Slack's
limits (50 blocks, 3,000 characters a section) are checked before anything is sent."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from slack_sdk.models.blocks import (
    ActionsBlock,
    Block,
    ButtonElement,
    ContextBlock,
    DividerBlock,
    MarkdownTextObject,
    SectionBlock,
)

from bot.render import mrkdwn, render
from bot.text import shorten
from bridges.ports import EmailCard

SECTION_LIMIT = 3000
BODY_SECTIONS = 10  # beyond ~30,000 characters the full text goes in the thread as a file
REPLY_IN_CHAT = "reply_in_chat"
REPLY_BY_EMAIL = "reply_by_email"


@dataclass(frozen=True)
class RenderedCard:
    blocks: list[dict[str, Any]]
    fallback: str  # the notification text
    full_text: str | None  # the whole body, when the card had to cut it


def _body_sections(body: str) -> tuple[list[Block], bool]:
    escaped = mrkdwn(body)
    sections: list[Block] = []
    rest = escaped
    while rest and len(sections) < BODY_SECTIONS:
        chunk = shorten(rest, SECTION_LIMIT, marker="")
        sections.append(SectionBlock(text=MarkdownTextObject(text=chunk, verbatim=True)))
        rest = rest[len(chunk):].lstrip("\n")
    return sections, bool(rest)


def email_card(card: EmailCard) -> RenderedCard:
    body_blocks, truncated = _body_sections(card.body)
    header = render("chat/email_header.slack.j2", card=card)
    footer = render("chat/email_footer.slack.j2", card=card, truncated=truncated)
    blocks: list[Block] = [SectionBlock(text=MarkdownTextObject(text=header, verbatim=True))]
    blocks += body_blocks
    if footer:
        blocks.append(ContextBlock(elements=[MarkdownTextObject(
            text=shorten(footer, SECTION_LIMIT), verbatim=True)]))
    value = f"{card.conversation_id}/{card.entry_id}"
    blocks += [DividerBlock(), ActionsBlock(block_id="switchboard_email", elements=[
        ButtonElement(text="Reply in chat", action_id=REPLY_IN_CHAT, value=value,
                      style="primary"),
        ButtonElement(text="Reply by email", action_id=REPLY_BY_EMAIL, value=value),
    ])]
    for block in blocks:
        block.validate_json()
    fallback = shorten(f"Email from {card.sender}: {card.subject or '(no subject)'}", 300)
    return RenderedCard([b.to_dict() for b in blocks], mrkdwn(fallback),
                        card.body if truncated else None)
