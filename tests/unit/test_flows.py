"""The flows themselves, fast: the real flow objects on the in-memory stores, with a chat
network and a mail server that keep what they were given (the integration tests run
the same paths on the real services)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from email.message import EmailMessage

from bot.errors import BridgeError
from bot.flows.delivery import Lifecycle, Policy
from bot.flows.inbound_email import Duplicate, InboundEmailFlow, Posted
from bot.flows.outcomes import (
    AlreadyHandled,
    CannotReply,
    Delivered,
    Emailed,
    EmailQueued,
    Queued,
    Unavailable,
    notice_for,
)
from bot.flows.reply_by_email import ReplyByEmail
from bot.flows.reply_in_chat import ReplyInChat
from bot.mail import Envelope
from bot.metering import Meter, Service, month_of
from bot.model import (
    Address,
    Carrier,
    ChatRef,
    ChatTarget,
    DeliveryState,
    EntryKind,
    HistoryEntry,
    Network,
    Presence,
    Provenance,
)
from bot.ports import ChatReply, EmailCard, Notice
from bot.settings import Route
from bridges.email.mime import MimeReader
from storage.memory import MemoryStore

TEAM = "T0TEAM"
BOB = Address.slack(TEAM, "U0BOB")
ALICE_CHAT = Address.slack(TEAM, "U0ALICE")
ALICE = Address.email("alice@partner.test")


@dataclass
class Chat:
    """A chat network that keeps what it is given."""

    network: Network = Network.SLACK
    present: set[Address] = field(default_factory=set)
    cards: list[tuple[ChatTarget, EmailCard, ChatRef | None]] = field(default_factory=list)
    replies: list[tuple[Address, ChatReply]] = field(default_factory=list)
    notices: list[tuple[Address, Notice]] = field(default_factory=list)

    async def post_email(self, target: ChatTarget, card: EmailCard, *,
                         thread: ChatRef | None, key: str, resume: bool = False) -> ChatRef:
        self.cards.append((target, card, thread))
        ts = f"{len(self.cards)}.0"
        return ChatRef(self.network, target.room or "D1", ts, thread.thread if thread else ts)

    async def presence(self, user: Address) -> Presence:
        return Presence.PRESENT if user in self.present else Presence.AWAY

    async def find_user(self, email: Address, within: Address | None = None) -> Address | None:
        return None

    async def find_email(self, user: Address) -> Address | None:
        return None

    async def send_reply(self, user: Address, reply: ChatReply, key: str) -> ChatRef:
        self.replies.append((user, reply))
        return ChatRef(self.network, "D1", f"r{len(self.replies)}", f"r{len(self.replies)}")

    async def is_member(self, room: str, user: Address) -> bool:
        return True

    async def notify(self, user: Address, notice: Notice, where: ChatRef | None) -> None:
        self.notices.append((user, notice))

    async def customer(self, room: str) -> str | None:
        return f"slack:{TEAM}"


@dataclass
class Mailer:
    """A mail server that accepts, or is down (a 4xx) while ``down`` is set."""

    sent: list[EmailMessage] = field(default_factory=list)
    down: bool = False

    async def send(self, message: EmailMessage) -> None:
        if self.down:
            raise BridgeError("421 try again later", transient=True)
        self.sent.append(message)


POLICY = Policy(retry_interval=60, retry_deadline=3600, unknown_counts_as_present=False,
                reply_token_ttl=3600, bot_email="switchboard@example.com",
                reply_domain="reply.example.com")


def wired(store: MemoryStore, chat: Chat, mailer: Mailer
          ) -> tuple[InboundEmailFlow, ReplyInChat, ReplyByEmail]:
    networks = {Network.SLACK: chat}
    inbound = InboundEmailFlow(
        routes=[Route("support@example.com", "slack", "C1")], networks=networks,
        address_book=store.address_book, history=store.history,
        conversations=store.conversations, ingest=store.ingest, tokens=store.tokens,
        mailer=mailer, bot_email="switchboard@example.com",
        reply_domain="reply.example.com", rates=store.rates, reader=MimeReader(10_000_000),
        meter=Meter(store.usage), arrivals=store.arrivals)
    shared = Lifecycle(networks=networks, address_book=store.address_book,
                       history=store.history, deliveries=store.deliveries,
                       conversations=store.conversations, tokens=store.tokens, mailer=mailer,
                       policy=POLICY, scheduler=store.scheduler, meter=Meter(store.usage))
    replies = ReplyInChat(**vars(shared))
    inbound.people = replies
    return inbound, replies, ReplyByEmail(**vars(shared))


def raw_email(subject: str, message_id: str, in_reply_to: str = "") -> bytes:
    msg = EmailMessage()
    msg["From"] = f"Alice <{ALICE.value}>"
    msg["To"] = "support@example.com"
    msg["Subject"] = subject
    msg["Message-ID"] = message_id
    if in_reply_to:
        msg["In-Reply-To"] = in_reply_to
    msg.set_content("Can you send the numbers?\n")
    return msg.as_bytes()


async def first_email(inbound: InboundEmailFlow, store: MemoryStore
                      ) -> tuple[Posted, HistoryEntry]:
    posted = await inbound.receive(raw_email("Numbers", "<n1@partner.test>"),
                                   Envelope("imap:INBOX"))
    assert isinstance(posted, Posted)
    return posted, (await store.history.conversation(posted.conversation_id)).entries[0]


async def test_an_email_is_posted_once_recorded_and_metered() -> None:
    store, chat = MemoryStore(), Chat()
    inbound, _, _ = wired(store, chat, Mailer())
    raw = raw_email("Numbers", "<n1@partner.test>")
    posted = await inbound.receive(raw, Envelope("imap:INBOX"))
    assert isinstance(posted, Posted) and [c[0].room for c in chat.cards] == ["C1"]
    assert isinstance(await inbound.receive(raw, Envelope("imap:INBOX")), Duplicate)
    assert len(chat.cards) == 1
    answer_raw = raw_email("Re: Numbers", "<n2@partner.test>", "<n1@partner.test>")
    answer = await inbound.receive(answer_raw, Envelope("imap:INBOX"))
    assert isinstance(answer, Posted) and answer.conversation_id == posted.conversation_id
    assert chat.cards[1][2] == posted.refs[0]  # in the first post's thread
    page = await store.history.conversation(posted.conversation_id)
    assert [e.subject for e in page.entries] == ["Re: Numbers", "Numbers"]
    assert await store.usage.customers() == [f"slack:{TEAM}"]
    usage = await store.usage.usage(f"slack:{TEAM}", month_of(time.time()))
    assert usage.transactions == {Service.EMAIL_INGESTED: 2, Service.CHAT_POST: 2}
    assert usage.bytes_in == len(raw) + len(answer_raw)  # a duplicate is not charged


async def test_a_reply_waits_for_an_away_person_and_reaches_them_when_back() -> None:
    store, chat, mailer = MemoryStore(), Chat(), Mailer()
    inbound, replies, _ = wired(store, chat, mailer)
    await store.address_book.link(ALICE, provenance=Provenance.IMPORTED, verified=True)
    await store.address_book.link(ALICE_CHAT, provenance=Provenance.IMPORTED, verified=True,
                                  to=ALICE)
    posted, entry = await first_email(inbound, store)
    away = await replies.start(replier=BOB, replier_name="Bob", text="Here they are",
                               conversation_id=posted.conversation_id, entry_id=entry.id,
                               request="modal-1")
    assert isinstance(away, Unavailable) and away.person == ALICE.value
    assert isinstance(await replies.start(
        replier=BOB, replier_name="Bob", text="Here they are", request="modal-1",
        conversation_id=posted.conversation_id, entry_id=entry.id), Unavailable)
    queued = await replies.choose(away.delivery_id, "queue", BOB)
    assert isinstance(queued, Queued)
    assert isinstance(await replies.choose(away.delivery_id, "queue", BOB), AlreadyHandled)
    assert [s[0] for s in store.scheduler.scheduled] == [away.delivery_id]
    assert isinstance(await replies.retry(away.delivery_id), Unavailable)  # still away
    chat.present.add(ALICE_CHAT)
    delivered = await replies.retry(away.delivery_id)
    assert isinstance(delivered, Delivered)
    (to, reply), = chat.replies
    assert to == ALICE_CHAT and reply.text == "Here they are" and reply.replier == "Bob"
    assert [h.subject for h in reply.history] == ["Numbers"]
    assert "is back" in chat.notices[-1][1].text
    done = await store.deliveries.get(away.delivery_id)
    assert done is not None and done.state is DeliveryState.DELIVERED and done.attempts == 2


async def test_both_ways_to_email_queue_while_the_mail_server_is_down() -> None:
    """Send-as-email from chat and reply-by-email are one lifecycle: both queue the email
    when the server is down, both send it on the retry after, both tell the replier."""
    store, chat, mailer = MemoryStore(), Chat(), Mailer(down=True)
    inbound, replies, emails = wired(store, chat, mailer)
    posted, entry = await first_email(inbound, store)
    by_email = await emails.start(replier=BOB, replier_name="Bob", text="By email",
                                  conversation_id=posted.conversation_id, entry_id=entry.id,
                                  request="shortcut-1")
    no_chat = await replies.start(replier=BOB, replier_name="Bob", text="From chat",
                                  conversation_id=posted.conversation_id, entry_id=entry.id,
                                  request="modal-2")
    assert type(no_chat).__name__ == "NoChatAddress"
    as_email = await replies.choose(no_chat.delivery_id, "sendmail", BOB)  # type: ignore[union-attr]
    assert isinstance(by_email, EmailQueued) and isinstance(as_email, EmailQueued)
    for outcome in (by_email, as_email):
        queued = await store.deliveries.get(outcome.delivery_id)
        assert queued is not None and queued.state is DeliveryState.QUEUED
        assert queued.context.carrier is Carrier.EMAIL
    mailer.down = False
    for outcome in (by_email, as_email):
        assert isinstance(await replies.retry(outcome.delivery_id), Emailed)
    assert sorted(str(m["To"]) for m in mailer.sent) == [ALICE.value, ALICE.value]
    assert all(m["In-Reply-To"] == "<n1@partner.test>" for m in mailer.sent)
    told = [n.text for _, n in chat.notices]
    assert len(told) == 2 and all(t.startswith(f"Sent by email to {ALICE.value}")
                                  for t in told)
    history = await store.history.conversation(posted.conversation_id)
    assert [e.kind for e in history.entries].count(EntryKind.EMAIL) == 3


async def test_an_email_queued_past_the_deadline_fails_and_says_so() -> None:
    store, chat, mailer = MemoryStore(), Chat(), Mailer(down=True)
    _, replies, emails = wired(store, chat, mailer)
    emails.policy = replies.policy = Policy(**{**vars(POLICY), "retry_deadline": 0})
    outcome = await emails.start_new(sender=BOB, sender_name="Bob", to=ALICE,
                                     text="Hello Alice", request="command-1")
    assert isinstance(outcome, EmailQueued)
    failed = await replies.retry(outcome.delivery_id)
    assert isinstance(failed, CannotReply) and "until the deadline" in failed.reason
    assert "until the deadline" in chat.notices[-1][1].text


def test_each_outcome_has_its_own_words() -> None:
    texts = {type(o).__name__: notice_for(o).text for o in (
        Queued("d1", ALICE_CHAT, "alice"), Emailed("d1", ALICE),
        EmailQueued("d1", ALICE, "421 later"), CannotReply("no reason"),
        AlreadyHandled("d1", DeliveryState.EMAILED))}
    assert len(set(texts.values())) == len(texts)
    assert "421 later" in texts["EmailQueued"] and "emailed" in texts["AlreadyHandled"]
