"""What happened to a delivery, as its replier is told: one type per outcome, and one
template per type (templates/chat/outcome/<type>.txt.j2)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from bot.model import Address, ChatRef, DeliveryState, Presence
from bot.ports import Choice, Notice
from bot.render import render


@dataclass(frozen=True)
class Delivered:
    delivery_id: str
    recipient: Address
    where: ChatRef
    person: str  # how the recipient is known to the replier


@dataclass(frozen=True)
class Unavailable:
    delivery_id: str
    recipient: Address
    presence: Presence
    person: str


@dataclass(frozen=True)
class NoChatAddress:
    delivery_id: str
    email: Address


@dataclass(frozen=True)
class Queued:
    delivery_id: str
    recipient: Address
    person: str


@dataclass(frozen=True)
class Cancelled:
    delivery_id: str


@dataclass(frozen=True)
class Emailed:
    delivery_id: str
    to: Address
    cc: tuple[Address, ...] = ()
    forwarded: bool = False


@dataclass(frozen=True)
class EmailQueued:
    """The mail server was unavailable; the retry job sends it when the server is back."""

    delivery_id: str
    to: Address
    reason: str


@dataclass(frozen=True)
class EmailBounced:
    """The email was sent, then the recipient's mail system returned it."""

    delivery_id: str
    to: Address
    reason: str  # the remote server's words


@dataclass(frozen=True)
class AlreadyHandled:
    delivery_id: str
    state: DeliveryState


@dataclass(frozen=True)
class CannotReply:
    reason: str


Outcome = (Delivered | Unavailable | NoChatAddress | Queued | Cancelled | Emailed
           | EmailQueued | EmailBounced | AlreadyHandled | CannotReply)


def choices_for(delivery_id: str) -> tuple[Choice, ...]:
    return (Choice("queue", "Queue and retry", delivery_id),
            Choice("sendmail", "Send as email", delivery_id),
            Choice("cancel", "Cancel", delivery_id))


def notice_for(outcome: Outcome, retry_interval: float = 60) -> Notice:
    """What the replier is told about an outcome, with the choices left to them: one
    template per kind of outcome."""
    name = re.sub(r"(?<!^)(?=[A-Z])", "_", type(outcome).__name__).lower()
    text = render(f"chat/outcome/{name}.txt.j2", o=outcome, interval=int(retry_interval))
    if isinstance(outcome, Unavailable):
        return Notice(text, choices_for(outcome.delivery_id))
    if isinstance(outcome, NoChatAddress):
        return Notice(text, tuple(c for c in choices_for(outcome.delivery_id)
                                  if c.action != "queue"))
    return Notice(text)
