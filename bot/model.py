"""The domain: addresses, identities, history entries and deliveries.

Plain frozen dataclasses with no I/O, shared by the flows, the bridges and the store.
"""

from __future__ import annotations

import enum
import re
import unicodedata
from dataclasses import dataclass, field
from email.headerregistry import Address as _HeaderAddress
from email.utils import parseaddr

from bot.headers import display_name as clean_display_name


class AddressError(ValueError):
    """Text that is not a usable email, Slack or Matrix address."""


class Network(enum.StrEnum):
    EMAIL = "email"
    SLACK = "slack"
    MATRIX = "matrix"


_SLACK_ID = re.compile(r"^[TE][A-Z0-9]{2,}/[UW][A-Z0-9]{2,}$")
# Matrix user ids: https://spec.matrix.org/latest/appendices/#user-identifiers
_MATRIX_ID = re.compile(r"^@[a-z0-9._=\-/+]+:[a-z0-9.\-]+(:[0-9]{1,5})?$")
# RFC 5322 atext, plus any non-ASCII letter, mark or digit (RFC 6532, internationalised
# addresses such as jöran@…).
_EMAIL_LOCAL = re.compile(r"^(?:[A-Za-z0-9!#$%&'*+/=?^_`{|}~.\-]|[^\x00-\x7f\s])+$")
# RFC 5321 4.5.3.1: a local part of at most 64 octets, a path of at most 256 (so 254 for
# the address between its angle brackets); longer ones are refused wherever read.
MAX_LOCAL_OCTETS = 64
MAX_ADDRESS_OCTETS = 254
MAX_MATRIX_ID_OCTETS = 255  # the Matrix spec's limit on a user id
_DOMAIN = re.compile(r"^(?=.{1,253}$)([a-z0-9](?:[a-z0-9\-]{0,61}[a-z0-9])?\.)*[a-z0-9]"
                     r"(?:[a-z0-9\-]{0,61}[a-z0-9])?$")


@dataclass(frozen=True, order=True)
class Address:
    """One way to reach a person: an email address, a Slack user or a Matrix user.

    Always normalised, so two spellings of one address compare equal and share one
    key in the store. ``str(address)`` is the canonical ``network:value`` form.
    """

    network: Network
    value: str

    def __str__(self) -> str:
        return f"{self.network}:{self.value}"

    @classmethod
    def email(cls, text: str) -> Address:
        """Normalise an email address: display name dropped, case folded.

        The domain is case-insensitive by RFC 5321; the local part is folded too
        because every mainstream provider treats it so, and a look-up that missed
        ``Alice@`` for ``alice@`` would surprise every user.
        """
        if any(ord(c) < 32 or ord(c) == 127 for c in text.strip()):
            raise AddressError(f"{text!r} contains control characters")
        _name, addr = parseaddr(text.strip())
        # parseaddr repairs what it cannot read (it drops inner spaces, for one);
        # an address it had to rewrite is not the one the person typed.
        if not addr or "@" not in addr or addr not in text:
            raise AddressError(f"{text!r} is not an email address (expected name@domain)")
        local, _, domain = addr.rpartition("@")
        domain = domain.strip().lower().rstrip(".")
        try:
            domain = domain.encode("idna").decode("ascii")
        except UnicodeError as exc:
            raise AddressError(f"{text!r} has an invalid domain {domain!r}") from exc
        if any(ord(c) > 127 and unicodedata.category(c)[0] not in "LMN" for c in local):
            raise AddressError(f"{text!r} has an invalid local part {local!r}")
        if not local or not _EMAIL_LOCAL.match(local) or local.startswith(".") \
                or local.endswith(".") or ".." in local:
            raise AddressError(f"{text!r} has an invalid local part {local!r}")
        if not _DOMAIN.match(domain) or "." not in domain:
            raise AddressError(f"{text!r} has an invalid domain {domain!r}")
        if len(local.encode()) > MAX_LOCAL_OCTETS:
            raise AddressError(f"{_shown(addr)} is too long: the part before @ may have at "
                               f"most {MAX_LOCAL_OCTETS} characters (RFC 5321), it has "
                               f"{len(local.encode())}")
        whole = f"{local.lower()}@{domain}"
        if len(whole.encode()) > MAX_ADDRESS_OCTETS:
            raise AddressError(f"{_shown(addr)} is too long: an email address may have at "
                               f"most {MAX_ADDRESS_OCTETS} characters (RFC 5321), it has "
                               f"{len(whole.encode())}")
        return cls(Network.EMAIL, whole)

    @classmethod
    def slack(cls, team_id: str, user_id: str) -> Address:
        value = f"{team_id.strip().upper()}/{user_id.strip().upper()}"
        if not _SLACK_ID.match(value):
            raise AddressError(f"{value!r} is not a Slack user (expected TEAM/USER ids, "
                               "like T0123ABC/U0456DEF)")
        return cls(Network.SLACK, value)

    @classmethod
    def matrix(cls, user_id: str) -> Address:
        value = user_id.strip()
        localpart, sep, server = value.partition(":")
        value = f"{localpart.lower()}{sep}{server.lower()}"
        if len(value.encode()) > MAX_MATRIX_ID_OCTETS:
            raise AddressError(f"{_shown(value)} is too long: a Matrix user id may have at "
                               f"most {MAX_MATRIX_ID_OCTETS} characters")
        if not _MATRIX_ID.match(value):
            raise AddressError(f"{user_id!r} is not a Matrix user id (expected @user:server)")
        return cls(Network.MATRIX, value)

    @classmethod
    def parse(cls, text: str) -> Address:
        """Read an address as a person types it, or in its canonical form.

        ``email:a@b``, ``slack:T1/U1`` and ``matrix:@a:b`` are canonical; bare
        ``@user:server`` is Matrix, bare ``T…/U…`` is Slack, anything else is email.
        """
        text = text.strip()
        prefix, sep, rest = text.partition(":")
        if sep and prefix in Network.__members__.values():
            text, forced = rest, Network(prefix)
        else:
            forced = None
        if forced is Network.MATRIX or (forced is None and text.startswith("@") and ":" in text):
            return cls.matrix(text)
        if forced is Network.SLACK or (forced is None and _SLACK_ID.match(text.upper())):
            team, _, user = text.partition("/")
            return cls.slack(team, user)
        return cls.email(text)

    def header_form(self, display_name: str = "") -> str:
        """The address as an RFC 5322 header value, safe against header injection."""
        if self.network is not Network.EMAIL:
            raise AddressError(f"{self} is not an email address")
        local, _, domain = self.value.rpartition("@")
        return str(_HeaderAddress(display_name=clean_display_name(display_name),
                                  username=local, domain=domain))


def _shown(text: str) -> str:
    """A long address in a message: its start and end, enough to recognise it."""
    return repr(text) if len(text) <= 60 else repr(f"{text[:30]}…{text[-20:]}")


class Provenance(enum.StrEnum):
    """How Switchboard came to know that an address belongs to an identity."""

    LEARNED = "learned"  # reported by a network (Slack profile, Matrix 3PID)
    SELF_LINKED = "self-linked"  # the person proved it with an emailed code
    IMPORTED = "imported"  # an administrator's import


@dataclass(frozen=True)
class Mapping:
    """One address of an identity, with where that knowledge came from."""

    address: Address
    provenance: Provenance
    verified: bool
    added_at: float


@dataclass(frozen=True)
class Identity:
    """A person: every address known to reach them."""

    id: str
    mappings: tuple[Mapping, ...]

    def addresses(self, network: Network | None = None) -> list[Address]:
        return [m.address for m in self.mappings if network is None or m.address.network is network]

    def mapping(self, address: Address) -> Mapping | None:
        return next((m for m in self.mappings if m.address == address), None)


class EntryKind(enum.StrEnum):
    EMAIL = "email"
    CHAT = "chat"
    ATTACHMENT = "attachment"


@dataclass(frozen=True)
class AttachmentRef:
    """Where an attachment can be fetched again; the bytes are not kept in history."""

    filename: str
    content_type: str
    size: int
    url: str = ""


@dataclass(frozen=True)
class HistoryEntry:
    """One exchange in a conversation: an email, a chat message or an attachment."""

    id: str
    conversation_id: str
    kind: EntryKind
    sender: Address
    recipients: tuple[Address, ...]
    at: float
    text: str
    subject: str = ""
    attachments: tuple[AttachmentRef, ...] = ()
    meta: dict[str, str] = field(default_factory=dict)

    @property
    def participants(self) -> tuple[Address, ...]:
        seen: dict[Address, None] = dict.fromkeys((self.sender, *self.recipients))
        return tuple(seen)


@dataclass(frozen=True)
class HistoryPage:
    entries: tuple[HistoryEntry, ...]
    page: int
    page_size: int
    has_more: bool


class DeliveryState(enum.StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    QUEUED = "queued"
    CANCELLED = "cancelled"
    EMAILED = "emailed"
    FAILED = "failed"

    @property
    def is_final(self) -> bool:
        return self in FINAL_STATES


FINAL_STATES = frozenset({DeliveryState.DELIVERED, DeliveryState.CANCELLED, DeliveryState.EMAILED})

# Which states a delivery may move to from each state. A failed delivery can be
# retried (queued) or given up (cancelled); a queued one can be re-queued by a retry.
ALLOWED_TRANSITIONS: dict[DeliveryState, frozenset[DeliveryState]] = {
    DeliveryState.PENDING: frozenset({DeliveryState.DELIVERED, DeliveryState.QUEUED,
                                      DeliveryState.CANCELLED, DeliveryState.EMAILED,
                                      DeliveryState.FAILED}),
    DeliveryState.QUEUED: frozenset({DeliveryState.QUEUED, DeliveryState.DELIVERED,
                                     DeliveryState.CANCELLED, DeliveryState.EMAILED,
                                     DeliveryState.FAILED}),
    DeliveryState.FAILED: frozenset({DeliveryState.QUEUED, DeliveryState.CANCELLED,
                                     DeliveryState.EMAILED}),
    DeliveryState.DELIVERED: frozenset(),
    DeliveryState.CANCELLED: frozenset(),
    # Final for every person, but the mail system may still return it: a bounce fails it.
    DeliveryState.EMAILED: frozenset({DeliveryState.FAILED}),
}


def sources_of(target: DeliveryState) -> frozenset[DeliveryState]:
    """The states from which a delivery may move to ``target``."""
    return frozenset(s for s, targets in ALLOWED_TRANSITIONS.items() if target in targets)


@dataclass(frozen=True)
class StateChange:
    state: DeliveryState
    at: float
    note: str = ""


class Carrier(enum.StrEnum):
    """How a delivery travels."""

    CHAT = "chat"  # to the person's direct messages
    EMAIL = "email"  # by email (a reply by email, or a chat reply sent as email)


class Answering(enum.StrEnum):
    """What a delivery answers."""

    EMAIL = "email"  # an email's post
    CHAT = "chat"  # a reply delivered in chat, answered back
    NEW = "new"  # nothing: a new message (`im`, `email`)
    BY_EMAIL = "by_email"  # an email answer held for a chat person who was away
    FORWARD = "forward"  # an email forwarded to someone new, with a note


@dataclass(frozen=True)
class ReplyContext:
    """Everything about a delivery beyond who sends what to whom: what it answers, how it
    travels, how its people are named, and where the replier acted."""

    carrier: Carrier = Carrier.CHAT
    answering: Answering = Answering.NEW
    entry: str = ""  # the history entry it answers ("" for a new message)
    email: Address | None = None  # the recipient's email address, when known
    person: str = ""  # how the recipient is named to the replier
    replier_name: str = ""  # the replier's display name
    subject: str = ""  # of what it answers
    where: ChatRef | None = None  # where the replier acted: notices go there
    cc: tuple[Address, ...] = ()  # copied by email (a reply to all), beside the recipient


@dataclass(frozen=True)
class Delivery:
    """One outgoing message and everything that happened to it."""

    id: str
    conversation_id: str
    sender: Address
    recipient: Address
    text: str
    state: DeliveryState
    created_at: float
    changes: tuple[StateChange, ...] = ()
    attempts: int = 0
    context: ReplyContext = ReplyContext()

    @property
    def person(self) -> str:
        """The recipient as the replier knows them."""
        ctx = self.context
        return ctx.person or (ctx.email.value if ctx.email else "") or self.recipient.value

    @property
    def sender_name(self) -> str:
        return self.context.replier_name or self.sender.value


def same_organisation(a: Address, b: Address) -> bool:
    """Whether ``a`` and ``b`` may reach each other through Switchboard: not when they are
    Slack accounts of two workspaces (each workspace is its own customer, and one never
    posts into, or reads from, another)."""
    if a.network is Network.SLACK and b.network is Network.SLACK:
        return a.value.partition("/")[0] == b.value.partition("/")[0]
    return True


@dataclass(frozen=True)
class ChatTarget:
    """Where a post goes: a channel or room, or a person's direct messages."""

    network: Network
    room: str = ""  # Slack channel id or Matrix room id; empty for a DM
    user: Address | None = None  # the person, for a DM

    def __post_init__(self) -> None:
        if bool(self.room) == bool(self.user):
            raise ValueError("a chat target is either a room or a user")

    @property
    def key(self) -> str:
        return f"{self.network}:room:{self.room}" if self.room else f"dm:{self.user}"

    @classmethod
    def dm(cls, user: Address) -> ChatTarget:
        return cls(user.network, user=user)


@dataclass(frozen=True)
class ChatRef:
    """Where a post landed: enough to thread a reply under it or to edit it."""

    network: Network
    room: str  # Slack channel id / Matrix room id
    message: str  # Slack ts / Matrix event id
    thread: str  # the thread's root (the message itself when it is a root)


@dataclass(frozen=True)
class Refusal:
    """An email that could not be bridged, kept with the reason for operators."""

    at: float
    source: str  # "imap:INBOX", "smtp"
    message_id: str
    sender: str
    subject: str
    reason: str


class Presence(enum.StrEnum):
    """What a network says about a person. Unknown is not away: the policy decides."""

    PRESENT = "present"
    AWAY = "away"
    UNKNOWN = "unknown"  # the network does not report presence at all (the policy decides)
    # The network would not say for this person (Synapse shows presence only to users
    # who share a room): not presence, so the replier is asked as for someone away.
    HIDDEN = "hidden"
