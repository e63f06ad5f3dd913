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

from bot.model import Network
from bot.ports import ChatReply, EmailCard, Notice
from bot.render import mrkdwn, render
from bot.text import shorten

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
    header = render("chat/email_header.slack.j2", card=card, network=Network.SLACK)
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


def reply_message(reply: ChatReply) -> tuple[list[dict[str, Any]], str]:
    """The DM that carries a chat reply (with its history) to the email's sender."""
    body = render("chat/reply_dm.txt.j2", reply=reply)
    sections, _ = _body_sections(body)
    value = f"{reply.conversation_id}/{reply.delivery_id}"
    blocks: list[Block] = [*sections, ActionsBlock(block_id="switchboard_reply", elements=[
        ButtonElement(text="Reply in chat", action_id=REPLY_IN_CHAT, value=value,
                      style="primary"),
        ButtonElement(text="Reply by email", action_id=REPLY_BY_EMAIL, value=value),
    ])]
    for block in blocks:
        block.validate_json()
    fallback = shorten(f"{reply.replier} replied: {reply.text}", 300)
    return [b.to_dict() for b in blocks], mrkdwn(fallback)


def notice_message(notice: Notice) -> tuple[list[dict[str, Any]], str]:
    blocks: list[Block] = [SectionBlock(text=MarkdownTextObject(
        text=shorten(mrkdwn(notice.text), SECTION_LIMIT), verbatim=True))]
    if notice.choices:
        blocks.append(ActionsBlock(block_id="switchboard_choice", elements=[
            ButtonElement(text=c.label, action_id=f"delivery_{c.action}", value=c.value,
                          style="primary" if i == 0 else None)
            for i, c in enumerate(notice.choices)]))
    return [b.to_dict() for b in blocks], mrkdwn(shorten(notice.text, 300))


def reply_modal(private_metadata: str, subject: str, *, by_email: bool = False
                ) -> dict[str, Any]:
    """The compose step of *Reply in chat* (or, ``by_email``, of *Reply by email*)."""
    return {
        "type": "modal",
        "callback_id": "reply_by_email_modal" if by_email else "reply_in_chat_modal",
        "title": {"type": "plain_text", "text": "Reply by email" if by_email
                  else "Reply in chat"},
        "submit": {"type": "plain_text", "text": "Send"},
        "close": {"type": "plain_text", "text": "Cancel"},
        "private_metadata": private_metadata,
        "blocks": [
            {"type": "context", "elements": [{"type": "mrkdwn", "text": shorten(
                f"Replying to: {mrkdwn(subject or '(no subject)')}", 300)}]},
            {"type": "input", "block_id": "reply", "label": {"type": "plain_text",
                                                             "text": "Your reply"},
             "element": {"type": "plain_text_input", "action_id": "text", "multiline": True,
                         "max_length": 3000}},
        ],
    }
