"""What the core asks of each network. A flow in ``bot/`` sees only these protocols."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from bot.mail import MailAttachment
from bot.model import ChatRef, ChatTarget, Network


@dataclass(frozen=True)
class EmailCard:
    """An email as chat shows it; each bridge renders it in its own markup."""

    conversation_id: str
    entry_id: str
    sender: str  # "Alice Example <alice@example.com>"
    subject: str
    body: str
    quoted_lines: int  # folded away, kept in history
    notes: tuple[str, ...]
    attachments: tuple[MailAttachment, ...]
    is_reply: bool  # posted into an existing conversation's thread


class ChatNetwork(Protocol):
    network: Network

    async def post_email(self, target: ChatTarget, card: EmailCard, *,
                         thread: ChatRef | None, key: str) -> ChatRef:
        """Post ``card`` (with its attachments) to ``target``, under ``thread`` if given.

        ``key`` identifies this post: posting the same key twice must not show the
        message twice. Raises a BridgeError (``transient`` says whether to retry).
        """
        ...
