"""Every id Switchboard makes, in one place. Each is derived from what it names, so that
doing the same thing twice (an email read again, a double click, an event Slack sends
twice) finds the record the first time made instead of making another."""

from __future__ import annotations

import hashlib

from bot.model import Address, Network


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def delivery_id_for(request: str) -> str:
    """One delivery per request (a modal submission, a command event)."""
    return "d" + _digest(request)


def held_email_delivery_id(message_id: str, person: Address) -> str:
    """The delivery that holds an email answer for a chat person who is away."""
    return delivery_id_for(f"email:{message_id}|{person}")


def entry_id(message_id: str) -> str:
    """An email's entry in history."""
    return "m" + _digest(message_id)


def new_conversation_id(message_id: str) -> str:
    """A conversation an email starts: named after that email, so reading it again lands
    in the same conversation."""
    return "c" + _digest(message_id)


def new_thread_id(request: str) -> str:
    """A conversation started from chat by a new email (`email <address> <text>`)."""
    return "n" + _digest(request)


def chat_message_ids(network: Network, room: str, message: str) -> tuple[str, str]:
    """A conversation and entry id for a chat message Switchboard did not post itself."""
    digest = _digest(f"{network}:{room}:{message}")
    return "s" + digest, "x" + digest


def retry_chain(delivery_id: str) -> str:
    """The claim held while a delivery's chain of retry jobs runs."""
    return f"{delivery_id}.chain"
