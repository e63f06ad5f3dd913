"""What the core asks of each network. A flow in ``bot/`` sees only these protocols."""

from __future__ import annotations

from dataclasses import dataclass
from email.message import EmailMessage
from typing import Protocol

from bot.mail import Envelope, InboundMail, MailAttachment, Peer, SenderAuth
from bot.model import Address, ChatRef, ChatTarget, HistoryEntry, Network, Presence


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
    verified: bool = False  # the From address is authenticated (see bridges/email/auth.py)
    auth: str = ""  # what the sender checks found, shown when not verified
    identity: tuple[Address, ...] = ()  # the verified sender's chat accounts
    mailbox: str = ""  # the shared mailbox it came to, by its route's name ("Support <…>")
    to: tuple[str, ...] = ()  # its To and Cc as written (the mailbox by its name), bounded
    cc: tuple[str, ...] = ()
    tag: str = ""  # the +tag of the address it came to (support+billing@: "billing")

    def identity_on(self, network: Network) -> Address | None:
        return next((a for a in self.identity if a.network is network), None)


@dataclass(frozen=True)
class ChatReply:
    """A reply delivered to someone's DM, with the conversation it belongs to."""

    delivery_id: str
    conversation_id: str
    replier: str  # how the replier is shown ("Bob (Slack)")
    subject: str  # of the email being answered
    answering: str  # who wrote the email being answered
    text: str
    history: tuple[HistoryEntry, ...]  # earlier exchanges, oldest first
    older: int  # how many earlier entries were folded away
    # What it answers: "email" (an email's post), "chat" (a reply delivered in chat, answered
    # back), or "new" (a new message, `im <email> <text>`).
    answering_kind: str = "email"


@dataclass(frozen=True)
class Choice:
    action: str  # the command it stands for: queue, cancel, sendmail; post, discard, allow
    label: str
    value: str  # what it acts on: a delivery id, a held email's id
    kind: str = "delivery"  # what the value is ("delivery", "held"): Slack's action ids


@dataclass(frozen=True)
class Notice:
    """Something Switchboard tells one person, with optional choices to make."""

    text: str
    choices: tuple[Choice, ...] = ()


class ChatNetwork(Protocol):
    network: Network

    async def post_email(self, target: ChatTarget, card: EmailCard, *,
                         thread: ChatRef | None, key: str, resume: bool = False) -> ChatRef:
        """Post ``card`` (with its attachments) to ``target``, under ``thread`` if given.

        ``key`` identifies this post: posting the same key twice must not show the
        message twice. ``resume``: an earlier attempt with this key was cut off at an
        unknown point, so what it may have posted is looked for first and only the rest
        is posted. Raises a BridgeError (``transient`` says whether to retry).
        """
        ...

    async def presence(self, user: Address) -> Presence:
        """Whether ``user`` is present now; UNKNOWN when the network does not say."""
        ...

    async def find_user(self, email: Address, within: Address | None = None
                        ) -> Address | None:
        """The network's account registered with ``email``, if the network knows one;
        where a network holds separate organisations (Slack workspaces), only in the one
        of ``within`` (the person asking)."""
        ...

    async def find_email(self, user: Address) -> Address | None:
        """The email address in ``user``'s profile on the network, if it shows one."""
        ...

    async def send_reply(self, user: Address, reply: ChatReply, key: str) -> ChatRef:
        """Deliver ``reply`` to ``user``'s direct messages (idempotent per ``key``)."""
        ...

    async def is_member(self, room: str, user: Address) -> bool:
        """Whether ``user`` is in the channel or room ``room`` now."""
        ...

    async def notify(self, user: Address, notice: Notice, where: ChatRef | None) -> None:
        """Tell ``user`` something, near ``where`` (the thread they acted in) if given."""
        ...

    async def customer(self, room: str) -> str | None:
        """The metering customer a post into ``room`` is work for (its Slack workspace,
        the Matrix homeserver's organisation); None when it cannot be told now."""
        ...

    async def is_room_admin(self, room: str, user: Address) -> bool:
        """Whether ``user`` administers ``room`` on the network (a Slack workspace admin
        or owner of the channel's workspace; a Matrix moderator or admin of the room)."""
        ...

    async def room_admins(self, room: str, limit: int) -> list[Address]:
        """Up to ``limit`` members of ``room`` who administer it (the bot excluded)."""
        ...

    async def cannot_post(self, room: str) -> str | None:
        """Why the bot cannot post into ``room`` (not a member), or None when it can."""
        ...


class MailSender(Protocol):
    async def send(self, message: EmailMessage) -> None:
        """Submit ``message``; MailError (``transient`` for 4xx and outages) otherwise."""
        ...


class MailReader(Protocol):
    def read(self, raw: bytes, envelope: Envelope) -> InboundMail:
        """``raw`` (RFC 5322 bytes) as the core sees it; never raises for bad content."""
        ...


class SenderChecks(Protocol):
    async def check(self, raw: bytes, peer: Peer | None = None) -> SenderAuth:
        """Whether ``raw``'s From address is authenticated (DKIM, SPF, DMARC)."""
        ...


class Observer(Protocol):
    """What the flows report for monitoring (Prometheus, in the runtime)."""

    def bridged(self, direction: str, network: str) -> None: ...

    def refused(self) -> None: ...

    def failed(self, component: str) -> None: ...

    def ingest_lag(self, seconds: float) -> None: ...


class Unobserved:
    """An Observer that keeps nothing (tests, one-off programs)."""

    def bridged(self, direction: str, network: str) -> None:
        pass

    def refused(self) -> None:
        pass

    def failed(self, component: str) -> None:
        pass

    def ingest_lag(self, seconds: float) -> None:
        pass
