"""What the core asks of the store. ``bot/`` depends on these, never on Redis."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from bot.audit import AuditLog
from bot.held import Decision, HeldMail
from bot.metering import Charges, Customer, Transaction, Usage
from bot.model import (
    Address,
    ChatRef,
    Delivery,
    DeliveryState,
    HistoryEntry,
    HistoryPage,
    Identity,
    Network,
    Provenance,
    Refusal,
    ReplyContext,
)

if TYPE_CHECKING:  # bot.routes builds on these protocols
    from bot.routes import Route


class AddressBook(Protocol):
    async def resolve(self, address: Address) -> Identity | None:
        """The identity that owns ``address``, with all its addresses; None if unknown."""

    async def link(self, address: Address, *, provenance: Provenance, verified: bool,
                   to: Address | None = None) -> Identity:
        """Attach ``address`` to the identity owning ``to`` (a new identity when None).

        Raises AddressTaken when it already belongs to another identity, NotFound
        when ``to`` is unknown. Re-linking to the same identity updates the record.
        """

    async def unlink(self, address: Address) -> bool:
        """Remove ``address``; an identity left with no address is deleted."""


class History(Protocol):
    async def append(self, entry: HistoryEntry, arrived: float | None = None) -> bool:
        """Record an entry once; False when an entry with its id was already recorded.
        Retention dates it by ``arrived`` (default: now), never by the ``at`` a sender
        wrote (an email's Date header)."""

    async def conversation(self, conversation_id: str, page: int = 0,
                           page_size: int = 20) -> HistoryPage:
        """The conversation's entries, newest first."""

    async def person(self, addresses: Sequence[Address], page: int = 0,
                     page_size: int = 20) -> HistoryPage:
        """Entries involving any of ``addresses`` across conversations, newest first."""

    async def conversations_of(self, addresses: Sequence[Address], limit: int
                               ) -> set[str]:
        """The conversations any of ``addresses`` took part in (the newest ``limit``
        entries of each)."""
        ...

    async def count(self, conversation_id: str) -> int:
        """How many entries the conversation has."""

    async def entry(self, conversation_id: str, entry_id: str) -> HistoryEntry | None:
        """One entry, by id."""


class Deliveries(Protocol):
    async def create(self, delivery: Delivery) -> Delivery:
        """Record a new delivery (state pending); an existing id returns the stored one."""

    async def get(self, delivery_id: str) -> Delivery | None: ...

    async def transition(self, delivery_id: str, to: DeliveryState, note: str = "",
                         *, count_attempt: bool = False,
                         context: ReplyContext | None = None) -> Delivery:
        """Move to ``to`` if allowed from the current state, keeping the change (and the
        new ``context``, when given, in the same step).

        Raises InvalidTransition otherwise, NotFound for an unknown id.
        """

    async def claim(self, delivery_id: str, holder: str, ttl: float) -> bool:
        """Take the right to send this delivery for ``ttl`` seconds; False if taken."""

    async def extend(self, delivery_id: str, holder: str, ttl: float) -> bool:
        """Keep holding a claim; False if it is no longer ``holder``'s."""
        ...

    async def release(self, delivery_id: str) -> None: ...

    async def in_state(self, state: DeliveryState, limit: int = 100) -> list[Delivery]: ...

    async def count_by_state(self) -> dict[DeliveryState, int]: ...

    async def from_sender(self, sender: Address, limit: int = 100) -> list[Delivery]:
        """The sender's deliveries, newest first."""


class Conversations(Protocol):
    async def conversations_of(self, message_ids: Sequence[str]) -> list[str | None]:
        """The conversation of each Message-ID (None where unknown), in one round trip."""

    async def remember_message(self, message_id: str, conversation_id: str) -> None: ...

    async def threads(self, conversation_id: str) -> dict[str, ChatRef]:
        """Chat target key -> the conversation's thread root there."""

    async def begin_post(self, message_key: str, target_key: str
                         ) -> tuple[ChatRef | None, bool]:
        """Where it was posted (None if not yet), and whether an earlier attempt began
        posting it without recording the outcome; marks this attempt begun."""
        ...

    async def posted(self, message_key: str, target_key: str) -> ChatRef | None:
        """Where this message was already posted to this target, if it was."""

    async def record_post(self, message_key: str, target_key: str, ref: ChatRef,
                          conversation_id: str, message_id: str = "",
                          entry_id: str = "") -> None:
        """Remember a post (and the thread root, the Message-ID's conversation, and
        which history entry the chat message shows)."""

    async def latest_in(self, network: Network, room: str) -> tuple[str, str] | None:
        """(conversation id, entry id) of the latest post Switchboard made in ``room``."""
        ...

    async def shown_in(self, network: Network, room: str, message: str
                       ) -> tuple[str, str] | None:
        """(conversation id, entry id) of what a chat message Switchboard posted shows."""


@dataclass(frozen=True)
class Arrival:
    """What the store knows of an arriving email, read (and its rates counted) in one
    step: the ingest path's first round trip."""

    conversation_id: str
    existing: bool  # it answers (or came back to) a conversation Switchboard knows
    within_sender_rate: bool
    within_conversation_rate: bool  # not counted (True) when the sender is over its rate
    threads: dict[str, ChatRef]  # the conversation's thread root in each place
    identities: dict[Address, Identity]  # of the sender and recipients the book knows
    # The posts begun in the same step, for a new conversation's places (see
    # Conversations.begin_post): place -> (where it was posted already, if it was; whether
    # an earlier attempt began it and never recorded it).
    begun: dict[str, tuple[ChatRef | None, bool]] = field(default_factory=dict)


class Arrivals(Protocol):
    async def arrive(self, *, message_id: str, answers: Sequence[str],
                     conversation: str | None, new_conversation: str,
                     sender: Address | None, people: Sequence[Address],
                     sender_rate: tuple[int, int], conversation_rate: tuple[int, int],
                     new_places: Sequence[str] = ()) -> Arrival:
        """Count the email against its sender's rate; find its conversation (``conversation``
        when the reply address named it, else the first of ``answers`` known, else the
        one ``message_id`` is already in, else ``new_conversation``); count it against
        that conversation's rate; read the conversation's threads and the identities of
        ``sender`` and ``people``. Rates count each Message-ID once. When it answers
        nothing known and is within its rates, its posts to ``new_places`` (the target
        keys its routes give) are begun too, keyed by ``message_id``."""
        ...

    async def settle(self, *, message_key: str, target_key: str, ref: ChatRef | None,
                     entry: HistoryEntry, usage: Sequence[Transaction] = ()) -> bool:
        """The email's last post recorded (when ``ref``), its Message-ID indexed to its
        conversation, its history entry appended and its ``usage`` metered, in one step;
        whether the entry is new."""
        ...


class Ingest(Protocol):
    async def refuse(self, refusal: Refusal) -> None:
        """Keep an email that could not be bridged, with the reason, for operators."""


@dataclass(frozen=True)
class Checkpoint:
    """How far a mailbox has been read: every UID up to ``last_uid`` is done."""

    uidvalidity: int
    last_uid: int


class MailboxState(Ingest, Protocol):
    """What a mail reader keeps between sessions: where it got to, which messages keep
    failing, and which process holds the mailbox."""

    async def checkpoint(self, account: str, mailbox: str) -> Checkpoint | None: ...

    async def save_checkpoint(self, account: str, mailbox: str, cp: Checkpoint) -> None: ...

    async def count_failure(self, key: str) -> int:
        """One more failed attempt at the message ``key``; how many there were."""
        ...

    async def set_aside(self, key: str, raw: bytes, refusal: Refusal) -> None:
        """Keep a message that cannot be bridged and list it among the refused."""
        ...

    async def take_lease(self, name: str, holder: str, ttl: float) -> bool:
        """Take or extend the lease ``name`` unless another holder has it."""
        ...

    async def release_lease(self, name: str, holder: str) -> None: ...


class MatrixState(Protocol):
    """The Matrix bot's own state: its login session and its direct-message rooms."""

    async def session(self, user_id: str) -> tuple[str, str] | None: ...

    async def save_session(self, user_id: str, device_id: str, access_token: str) -> None: ...

    async def forget_session(self, user_id: str) -> None: ...

    async def dm_room(self, user_id: str) -> str | None: ...

    async def keys_device(self, user_id: str) -> str | None:
        """The device whose end-to-end keys were made (and must not be lost), if any."""
        ...

    async def save_keys_device(self, user_id: str, device_id: str | None) -> None: ...

    async def hand_over(self, request: dict[str, object], wait: float
                        ) -> dict[str, object] | None:
        """Give a post to the process that holds the bot's keys, and wait up to
        ``wait`` seconds for its answer (None: no answer)."""
        ...

    async def take_handed(self, wait: float) -> dict[str, object] | None:
        """The next post handed over (the key holder's side), waiting up to ``wait``."""
        ...

    async def answer_handed(self, request_id: str, answer: dict[str, object]) -> None: ...

    async def sync_token(self, user_id: str) -> str | None:
        """Where the sync loop is: the token after the last batch it handled."""
        ...

    async def save_sync_token(self, user_id: str, token: str) -> None: ...

    async def claim_dm_room(self, user_id: str, room_id: str) -> str:
        """Record ``room_id`` as the DM room unless another was recorded first; the winner."""
        ...


class AppServiceState(Protocol):
    """What the application service keeps: the transactions it handled (the homeserver
    repeats one until it is answered) and each email sender's ghost, under the sender's
    address (so that erasing the person erases their ghost's record too)."""

    async def transaction_handled(self, txn: str) -> bool: ...

    async def record_transaction(self, txn: str) -> None: ...

    async def ghost(self, email: str) -> tuple[str, str] | None:
        """(ghost user id, the display name last given it), if it was made."""
        ...

    async def save_ghost(self, email: str, user_id: str, name: str) -> None: ...

    async def ghost_in(self, email: str, room: str) -> bool: ...

    async def ghost_joined(self, email: str, room: str, joined: bool) -> None: ...


class Tokens(Protocol):
    async def issue(self, conversation_id: str, recipient: Address, ttl: int) -> str:
        """A new reply token bound to the conversation and recipient, valid ``ttl`` s."""

    async def resolve(self, token: str) -> tuple[str, Address] | None:
        """(conversation id, recipient) for a live token; None if unknown or expired."""


class RetryScheduler(Protocol):
    async def schedule_retry(self, delivery_id: str, attempt: int, delay: float) -> None:
        """Run the retry of ``delivery_id`` in ``delay`` seconds (once per attempt)."""


class Verifications(Protocol):
    async def issue(self, user: Address, email: Address, ttl: int) -> str:
        """A new code for ``user`` to prove ``email``; replaces an earlier one."""

    async def check(self, user: Address, code: str) -> Address | str:
        """The verified email, or the reason it is not verified."""


class RateLimits(Protocol):
    async def hit(self, name: str, limit: int, window: int, event: str = "") -> bool:
        """Count one event for ``name``; False once ``limit`` events fell in this window.
        Events with the same non-empty ``event`` id count once."""


class UsageStore(Protocol):
    async def record_all(self, txs: list[Transaction]) -> None: ...

    async def usage(self, customer: str, period: str) -> Usage: ...

    async def days(self, customer: str, month: str) -> list[Usage]: ...

    async def customers(self) -> list[str]: ...

    async def save_charges(self, charges: Charges) -> None: ...


class CustomerStore(Protocol):
    async def get(self, customer_id: str) -> Customer | None: ...

    async def all(self) -> list[str]: ...

    async def by_web_token(self, token: str) -> Customer | None: ...

    async def claim_report_email(self, customer_id: str, period: str, ttl: int = 600
                                 ) -> bool: ...

    async def mark_report(self, customer_id: str, period: str, **fields: str) -> None: ...

    async def report_marks(self, customer_id: str, period: str) -> dict[str, str]: ...

    async def debit_once(self, customer_id: str, period: str, amount_minor: int,
                         note: str) -> int | None: ...

    async def balance(self, customer_id: str) -> int: ...


class Workspaces(Protocol):
    """Slack workspaces that installed the app through OAuth: each one's installation
    (its bot token among it), the install flow's one-time states, and the Slack
    deliveries (Socket Mode envelopes) already handled."""

    async def save(self, team: str, installation: dict[str, object]) -> None:
        """Keep ``team``'s installation, replacing an earlier one (a re-install)."""
        ...

    async def find(self, team: str) -> dict[str, object] | None: ...

    async def remove(self, team: str) -> bool:
        """Forget ``team``'s installation (uninstalled, tokens revoked); whether it was kept."""
        ...

    async def teams(self) -> list[str]: ...

    async def issue_state(self, ttl: int) -> str:
        """A new OAuth ``state``: unguessable, good once, for ``ttl`` seconds."""
        ...

    async def consume_state(self, state: str) -> bool:
        """Whether ``state`` was issued, unused and unexpired; it is used up either way."""
        ...

    async def first_time(self, key: str, ttl: int) -> bool:
        """True once per ``key`` within ``ttl`` seconds, across every process."""
        ...


class Pacer(Protocol):
    """Paces what a network allows only so often (posts into one Slack channel), for every
    process at once: each call reserves its turn in a shared schedule."""

    async def reserve(self, name: str, interval: float, burst: int) -> float:
        """Take the next turn of ``name`` (one every ``interval`` seconds, ``burst`` at
        once); the seconds to wait before it comes (0: now)."""
        ...

    async def hold(self, name: str, seconds: float, interval: float, burst: int) -> None:
        """Nothing of ``name`` goes for ``seconds`` (the network said so: a 429's
        Retry-After); later turns queue behind it."""
        ...


class LoginStore(Protocol):
    """What a mailbox's OAuth2 login shares across processes (and with `doctor`): its
    tokens, sealed by the mail bridge (the store never holds them readable), and a lock,
    so that one process at a time asks the provider for a token: a rotated refresh token
    is good once."""

    async def load(self, name: str) -> dict[str, str]:
        """The fields last saved for login ``name`` (empty: none)."""
        ...

    async def save(self, name: str, fields: dict[str, str]) -> None: ...

    async def lock(self, name: str, holder: str, ttl: float) -> bool:
        """Take (or extend) the lock on ``name`` for ``ttl`` seconds; False: another holds it."""
        ...

    async def unlock(self, name: str, holder: str) -> None: ...


@dataclass(frozen=True)
class Erased:
    """What erasing a person removed, as counts (what it was is not kept anywhere)."""

    entries: int
    reply_tokens: int
    deliveries: int


class Erasure(Protocol):
    """Retention and erasure: operator work, not the flows'."""

    async def expire_history(self, before: float, batch: int) -> int:
        """Remove up to ``batch`` of the oldest history entries written before ``before``;
        how many were removed (0: none left)."""
        ...

    async def forget(self, addresses: Sequence[Address]) -> Erased:
        """Erase everything kept of the person known by ``addresses`` (their address-book
        entries are the address book's): history, reply tokens, deliveries, their name in
        the audit trail, and any other trace of their addresses."""
        ...

    async def receipt(self, person: Address) -> str:
        """A keyed digest naming ``person`` to no one, to confirm an erasure by."""
        ...


class RouteStore(Protocol):
    """Routes added from chat, and the senders admins allowed, kept for every process."""

    async def version(self) -> int:
        """A number that changes whenever a route or an allowance changes."""
        ...

    async def all(self) -> tuple[int, list[Route], dict[str, tuple[str, ...]]]:
        """The version, the routes and the allowed senders by route address, read
        together."""
        ...

    async def add(self, route: Route) -> Route | None:
        """Keep ``route`` unless its address has one; the one it has otherwise."""
        ...

    async def replace(self, route: Route) -> None: ...

    async def remove(self, address: str) -> Route | None:
        """The removed route; None when there was none."""
        ...

    async def allow(self, address: str, sender: str, keep: int) -> None:
        """``sender`` passes ``address``'s holds (the newest ``keep`` allowances stay)."""
        ...


class HeldStore(Protocol):
    async def hold(self, held: HeldMail, raw: bytes) -> bool:
        """Keep ``held`` (and its bytes) for ``HELD_DAYS``; False when it was held already
        (a re-read email)."""
        ...

    async def get(self, held_id: str) -> HeldMail | None: ...

    async def raw(self, held_id: str) -> bytes | None: ...

    async def decide(self, held_id: str, decision: Decision, by: str, at: float
                     ) -> tuple[HeldMail, bool] | None:
        """Record the decision if none was made: the record as decided, and whether this
        call decided it (False: an earlier decision stands, and is the one returned).
        None when there is no such held email."""
        ...

    async def undo(self, held_id: str) -> None:
        """Take a decision back (its effect failed): the email waits again."""
        ...

    async def waiting(self, network: Network | None = None, room: str = "",
                      limit: int = 20) -> list[HeldMail]:
        """Held emails not decided yet, newest first: of one room, or all."""
        ...


@dataclass(frozen=True)
class Beat:
    at: float
    checks: dict[str, bool]
    # network -> seconds its posts waited lately for that network's rate limit
    waits: dict[str, float] = field(default_factory=dict)


class Beats(Protocol):
    """Each running process says, every few seconds, how its links are (mailboxes,
    networks) and how long its posts wait for rate limits: what `status` in chat reports,
    whichever process answers it."""

    async def beat(self, process: str, beat: Beat, ttl: int) -> None: ...

    async def beats(self) -> dict[str, Beat]:
        """Each process heard from within its ``ttl``."""
        ...


class Stores(Protocol):
    """Every store the core uses, as one (the Redis store, the in-memory store)."""

    @property
    def address_book(self) -> AddressBook: ...

    @property
    def history(self) -> History: ...

    @property
    def deliveries(self) -> Deliveries: ...

    @property
    def conversations(self) -> Conversations: ...

    @property
    def ingest(self) -> MailboxState: ...

    @property
    def matrix(self) -> MatrixState: ...

    @property
    def tokens(self) -> Tokens: ...

    @property
    def verifications(self) -> Verifications: ...

    @property
    def rates(self) -> RateLimits: ...

    @property
    def usage(self) -> UsageStore: ...

    @property
    def customers(self) -> CustomerStore: ...

    @property
    def audit(self) -> AuditLog: ...

    @property
    def arrivals(self) -> Arrivals: ...

    @property
    def workspaces(self) -> Workspaces: ...

    async def close(self) -> None: ...
