"""Block Kit for Switchboard's Slack posts, as the JSON Slack reads, with Slack's limits
(50 blocks, 3,000 characters a section, 75 a button label, 2,000 a button value) checked
before anything is sent. Plain dicts: slack_sdk's model objects did the same at a tenth
of the ingest path's CPU."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bot.model import Network
from bot.ports import ChatReply, EmailCard, Notice
from bot.render import mrkdwn, render
from bot.text import shorten

SECTION_LIMIT = 3000
BLOCKS_LIMIT = 50
BUTTON_TEXT_LIMIT = 75
BUTTON_VALUE_LIMIT = 2000
ID_LIMIT = 255
Block = dict[str, Any]
BODY_SECTIONS = 10  # beyond ~30,000 characters the full text goes in the thread as a file
REPLY_IN_CHAT = "reply_in_chat"
REPLY_BY_EMAIL = "reply_by_email"
REPLY_ALL = "reply_all"
FORWARD = "forward_email"
BLOCK_SENDER = "block_sender"
BLOCK_DOMAIN = "block_domain"


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
        sections.append(_section(chunk))
        rest = rest[len(chunk):].lstrip("\n")
    return sections, bool(rest)


def _section(text: str) -> Block:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text, "verbatim": True}}


def _button(label: str, action_id: str, value: str, primary: bool = False) -> Block:
    button = {"type": "button", "text": {"type": "plain_text", "text": label, "emoji": True},
              "action_id": action_id, "value": value}
    if primary:
        button["style"] = "primary"
    return button


def _confirmed(button: Block, title: str, text: str) -> Block:
    """A button Slack asks about before it acts (the channel's admins may; others are
    told they may not)."""
    button["style"] = "danger"
    button["confirm"] = {"title": {"type": "plain_text", "text": title},
                         "text": {"type": "mrkdwn", "text": text},
                         "confirm": {"type": "plain_text", "text": "Block"},
                         "deny": {"type": "plain_text", "text": "Cancel"}, "style": "danger"}
    return button


def _actions(block_id: str, buttons: list[Block]) -> Block:
    return {"type": "actions", "block_id": block_id, "elements": buttons}


def _checked(blocks: list[Block]) -> list[Block]:
    """Slack's limits, so that a post is never refused for its shape."""
    if len(blocks) > BLOCKS_LIMIT:
        raise ValueError(f"{len(blocks)} blocks: Slack takes at most {BLOCKS_LIMIT}")
    for block in blocks:
        if block["type"] == "section" and not 0 < len(block["text"]["text"]) <= SECTION_LIMIT:
            raise ValueError("a section's text must have 1 to 3,000 characters")
        for element in block.get("elements", ()):
            if element["type"] == "button" and (
                    not 0 < len(element["text"]["text"]) <= BUTTON_TEXT_LIMIT
                    or len(element["value"]) > BUTTON_VALUE_LIMIT
                    or len(element["action_id"]) > ID_LIMIT):
                raise ValueError("a button's label, value or id is over Slack's limits")
            if element["type"] == "mrkdwn" and not 0 < len(element["text"]) <= SECTION_LIMIT:
                raise ValueError("a context element must have 1 to 3,000 characters")
    return blocks


def _reply_buttons(block_id: str, value: str) -> Block:
    return _actions(block_id, [_button("Reply in chat", REPLY_IN_CHAT, value, primary=True),
                               _button("Reply by email", REPLY_BY_EMAIL, value)])


def email_card(card: EmailCard) -> RenderedCard:
    body_blocks, truncated = _body_sections(card.body)
    header = render("chat/email_header.slack.j2", card=card, network=Network.SLACK)
    footer = render("chat/email_footer.slack.j2", card=card, truncated=truncated)
    blocks: list[Block] = [_section(header), *body_blocks]
    if footer:
        blocks.append({"type": "context", "elements": [
            {"type": "mrkdwn", "text": shorten(footer, SECTION_LIMIT), "verbatim": True}]})
    value = f"{card.conversation_id}/{card.entry_id}"
    buttons = _reply_buttons("switchboard_email", value)
    buttons["elements"] += [
        _button("Reply all", REPLY_ALL, value), _button("Forward", FORWARD, value),
        _confirmed(_button("Block sender", BLOCK_SENDER, value), "Block this sender?",
                   "Their mail to this channel's addresses will no longer be posted."),
        _confirmed(_button("Block domain", BLOCK_DOMAIN, value), "Block their domain?",
                   "Mail from everyone at that domain to this channel's addresses will no "
                   "longer be posted.")]
    blocks += [{"type": "divider"}, buttons]
    fallback = shorten(f"Email from {card.sender}: {card.subject or '(no subject)'}", 300)
    return RenderedCard(_checked(blocks), mrkdwn(fallback), card.body if truncated else None)


def reply_message(reply: ChatReply) -> tuple[list[dict[str, Any]], str]:
    """The DM that carries a chat reply (with its history) to the email's sender."""
    body = render("chat/reply_dm.txt.j2", reply=reply)
    sections, _ = _body_sections(body)
    blocks = [*sections, _reply_buttons("switchboard_reply",
                                        f"{reply.conversation_id}/{reply.delivery_id}")]
    fallback = shorten(f"{reply.replier} replied: {reply.text}", 300)
    return _checked(blocks), mrkdwn(fallback)


def notice_message(notice: Notice) -> tuple[list[dict[str, Any]], str]:
    blocks = [_section(shorten(mrkdwn(notice.text), SECTION_LIMIT))]
    if notice.choices:
        blocks.append(_actions("switchboard_choice", [
            _button(shorten(c.label, BUTTON_TEXT_LIMIT), f"{c.kind}_{c.action}", c.value,
                    primary=i == 0) for i, c in enumerate(notice.choices)]))
    return _checked(blocks), mrkdwn(shorten(notice.text, 300))


def reply_modal(private_metadata: str, subject: str, *, by_email: bool = False,
                recipients: str = "", title: str = "") -> dict[str, Any]:
    """The compose step of *Reply in chat* (or, ``by_email``, of *Reply by email*);
    ``recipients``: who the email goes to, shown before it is sent."""
    context = [{"type": "mrkdwn", "text": shorten(
        f"Replying to: {mrkdwn(subject or '(no subject)')}", 300)}]
    if recipients:
        context.append({"type": "mrkdwn", "text": shorten(mrkdwn(recipients), 2000)})
    return {
        "type": "modal",
        "callback_id": "reply_by_email_modal" if by_email else "reply_in_chat_modal",
        "title": {"type": "plain_text", "text": title or ("Reply by email" if by_email
                                                          else "Reply in chat")},
        "submit": {"type": "plain_text", "text": "Send"},
        "close": {"type": "plain_text", "text": "Cancel"},
        "private_metadata": private_metadata,
        "blocks": [
            {"type": "context", "elements": context},
            {"type": "input", "block_id": "reply", "label": {"type": "plain_text",
                                                             "text": "Your reply"},
             "element": {"type": "plain_text_input", "action_id": "text", "multiline": True,
                         "max_length": 3000}},
        ],
    }


def forward_modal(private_metadata: str, subject: str) -> dict[str, Any]:
    """*Forward*: to whom, and the note above the forwarded email."""
    return {
        "type": "modal", "callback_id": "forward_modal",
        "title": {"type": "plain_text", "text": "Forward by email"},
        "submit": {"type": "plain_text", "text": "Forward"},
        "close": {"type": "plain_text", "text": "Cancel"},
        "private_metadata": private_metadata,
        "blocks": [
            {"type": "context", "elements": [{"type": "mrkdwn", "text": shorten(
                f"Forwarding: {mrkdwn(subject or '(no subject)')}", 300)}]},
            {"type": "input", "block_id": "to", "label": {"type": "plain_text",
                                                          "text": "To (email address)"},
             "element": {"type": "plain_text_input", "action_id": "text", "max_length": 254}},
            {"type": "input", "block_id": "reply", "optional": True,
             "label": {"type": "plain_text", "text": "Your note"},
             "element": {"type": "plain_text_input", "action_id": "text", "multiline": True,
                         "max_length": 3000}},
        ],
    }
