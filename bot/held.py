"""Mail held for a room's admins: what it is, why it waits, and what was decided.

An email a route's rules hold back (an unauthenticated sender where only authenticated
ones may post, a blocked attachment), one over a rate limit, or one to an address with
no route (when a review room is set) waits here, with its bytes, until an admin of the
room posts it anyway, discards it, or allows its sender. Each is decided once.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from bot.model import ChatTarget, Network

HELD_DAYS = 7  # a held email not decided within this is dropped (it stays in the mailbox)
HELD_RAW_LIMIT = 10 * 1024 * 1024  # bytes of one held email kept to post later


class Decision(enum.StrEnum):
    POSTED = "posted"
    DISCARDED = "discarded"
    ALLOWED = "allowed"  # the sender is allowed past the route's holds, and this one posted


@dataclass(frozen=True)
class HeldMail:
    id: str
    at: float
    kind: str  # "unverified", "attachment", "rate", "no_route"
    reason: str
    route: str  # the route's address; "" for mail with no route (the review room)
    network: str
    room: str
    sender: str  # the From address ("" when it had none)
    subject: str
    preview: str  # the start of the body, for the admin to judge by
    message_id: str
    source: str
    auth_trust: str
    auth_summary: str
    sender_name: str = ""
    decision: str = ""
    decided_by: str = ""
    decided_at: float = 0.0

    @property
    def target(self) -> ChatTarget:
        return ChatTarget(Network(self.network), room=self.room)
