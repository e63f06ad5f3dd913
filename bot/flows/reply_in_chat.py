"""Reply in chat to an email: find the sender in chat, check presence, deliver with the
conversation's history, or let the replier choose (queue and retry, cancel, email).

Bob answers Alice's email from chat. Alice's chat address comes from the address
book, or from the networks (learned and stored). If she is present (or her network
does not say, and the policy counts that as present) she gets a DM from the bot;
otherwise Bob chooses. Every step is a delivery state change, and every delivered
reply is recorded in both parties' history.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from email.message import EmailMessage

from bot.errors import AddressTaken, BridgeError, InvalidTransition, StoreError
from bot.flows.outgoing import compose_reply
from bot.logs import log_context
from bot.mail import InboundMail
from bot.metering import Measure, Meter, Service, customer_of, entry_size, message_size
from bot.model import (
    Address,
    ChatRef,
    Delivery,
    DeliveryState,
    EntryKind,
    HistoryEntry,
    Network,
    Presence,
    Provenance,
)
from bot.permissions import Permissions
from bot.ports import ChatNetwork, ChatReply, Choice, MailSender, Notice, Observer, Unobserved
from bot.render import render
from bot.stores import (
    AddressBook,
    Conversations,
    Deliveries,
    History,
    RetryScheduler,
    Tokens,
)

log = logging.getLogger(__name__)

HISTORY_SHOWN = 10  # earlier exchanges carried with a reply; older ones are folded
# A claim on a delivery lives this long unless its holder renews it (every third of it)
# while it sends: a worker killed mid-send lets another take over within seconds.
CLAIM_SECONDS = 15.0


@dataclass(frozen=True)
class Delivered:
    delivery_id: str
    recipient: Address
    where: ChatRef
    person: str  # the email address the recipient is known by


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
    email: Address


@dataclass(frozen=True)
class AlreadyHandled:
    delivery_id: str
    state: DeliveryState


@dataclass(frozen=True)
class CannotReply:
    reason: str


@dataclass(frozen=True)
class Policy:
    retry_interval: float
    retry_deadline: float
    unknown_counts_as_present: bool
    reply_token_ttl: int
    bot_email: str
    reply_domain: str


ReplyOutcome = (Delivered | Unavailable | NoChatAddress | Queued | Cancelled | Emailed
                | AlreadyHandled | CannotReply)


def _chain(delivery_id: str) -> str:
    """The claim that a delivery's chain of retry jobs runs."""
    return f"{delivery_id}.chain"


def _person(delivery: Delivery) -> str:
    """Who a delivery is for, as the replier knows them."""
    return delivery.meta.get("person") or delivery.meta.get("email") \
        or delivery.recipient.value


def delivery_id_for(request: str) -> str:
    """One delivery per request (a modal submission, a command event): a double click or a
    redelivered event finds the delivery already there."""
    return "d" + hashlib.sha256(request.encode()).hexdigest()[:24]


@dataclass(kw_only=True)
class ReplyFlow:
    """What both reply flows (in chat, by email) work with."""

    networks: Mapping[Network, ChatNetwork]
    address_book: AddressBook
    history: History
    deliveries: Deliveries
    conversations: Conversations
    tokens: Tokens
    mailer: MailSender | None
    policy: Policy
    observer: Observer = field(default_factory=Unobserved)  # counts for monitoring
    meter: Meter = field(default_factory=Meter)  # usage per customer, for charges
    permissions: Permissions | None = None  # None: everyone may everything (unit tests)
    worker: str = "switchboard"  # names the claims this process takes

    async def email_of(self, author: Address) -> Address | None:
        """The author's email: itself, the address book, or their network profile."""
        if author.network is Network.EMAIL:
            return author
        identity = await self.address_book.resolve(author)
        if identity is not None:
            emails = sorted(identity.mappings, key=lambda m: not m.verified)
            found = [m.address for m in emails if m.address.network is Network.EMAIL]
            if found:
                return found[0]
        network = self.networks.get(author.network)
        if network is None:
            return None
        try:
            email = await network.find_email(author)
        except BridgeError as exc:
            log.warning("asking %s for %s's email failed: %s", author.network, author, exc)
            return None
        if email is not None:
            try:
                if identity is None:
                    await self.address_book.link(author, provenance=Provenance.LEARNED,
                                                 verified=True)
                await self.address_book.link(email, provenance=Provenance.LEARNED,
                                             verified=True, to=author)
            except AddressTaken:
                log.info("%s's profile email %s belongs to someone else in the address book",
                         author, email)
        return email

    @contextlib.asynccontextmanager
    async def holding(self, delivery_id: str) -> AsyncIterator[bool]:
        """The right to send ``delivery_id`` now (False: someone else is sending it),
        renewed for as long as the work takes and given back after."""
        holder = f"{self.worker}:{uuid.uuid4().hex}"
        if not await self.deliveries.claim(delivery_id, holder, CLAIM_SECONDS):
            yield False
            return
        renewing = asyncio.create_task(self._renew(delivery_id, holder))
        try:
            yield True
        finally:
            renewing.cancel()
            await self.deliveries.release(delivery_id)

    async def _renew(self, delivery_id: str, holder: str) -> None:
        while await asyncio.sleep(CLAIM_SECONDS / 3, True):
            try:
                if not await self.deliveries.extend(delivery_id, holder, CLAIM_SECONDS):
                    return
            except StoreError as exc:
                log.warning("could not renew the claim on %s: %s", delivery_id, exc)

    async def refused_use(self, user: Address, action: str) -> CannotReply | None:
        if self.permissions is None:
            return None
        reason = await self.permissions.may_use(user, action)
        return CannotReply(reason) if reason is not None else None

    async def refused_mail(self, sender: Address, to: Address,
                           answering: HistoryEntry | None, event: str) -> CannotReply | None:
        if self.permissions is None:
            return None
        reason = await self.permissions.may_mail(sender, to, answering, event)
        return CannotReply(reason) if reason is not None else None


@dataclass(kw_only=True)
class ReplyInChat(ReplyFlow):
    scheduler: RetryScheduler

    # --- starting a reply -----------------------------------------------------------

    async def start(self, *, replier: Address, replier_name: str, conversation_id: str,
                    entry_id: str, text: str, request: str, where: ChatRef | None = None,
                    to_email: Address | None = None) -> ReplyOutcome:
        """Bob's reply to the email ``entry_id`` (or, with ``to_email``, a new message to
        that person): deliver it, or say why not yet."""
        text = text.strip()
        if not text:
            return CannotReply("the reply is empty; type what you want to say")
        refused = await self.refused_use(replier, "reply in chat")
        if refused is not None:
            return refused
        target: Address | None = None
        email: Address | None
        if to_email is not None:
            email, subject, answering = to_email, "", "new"
        else:
            answered = await self._entry(conversation_id, entry_id)
            if answered is None:
                return CannotReply("that message is not one Switchboard knows; reply to the "
                                   "post itself")
            subject = answered.subject
            if answered.kind is EntryKind.CHAT:
                # An answer back to a reply delivered in chat: to its author, in chat.
                if answered.sender == replier:
                    return CannotReply("that is your own message; answer the person's reply "
                                       "instead")
                answering = "chat"
                if answered.sender.network in self.networks:
                    target = answered.sender
                email = await self.email_of(answered.sender) \
                    if answered.sender.network is not Network.EMAIL else answered.sender
            else:
                email, answering = answered.sender, "email"
        if target is None and email is not None:
            target = await self._chat_address(email)
        if target is None and email is None:
            return CannotReply("Switchboard knows no chat account or email address of the "
                               "person who wrote that")
        did = delivery_id_for(request)
        existing = await self.deliveries.get(did)
        if existing is not None and existing.state is not DeliveryState.PENDING:
            return AlreadyHandled(did, existing.state)
        person = await self._name_of(target) if target is not None and email is None \
            else (email.value if email else "")
        meta = {"entry": entry_id, "email": email.value if email else "", "person": person,
                "replier_name": replier_name, "subject": subject, "answering": answering}
        if where is not None:
            meta.update(where_network=where.network.value, where_room=where.room,
                        where_thread=where.thread)
        recipient = target or email
        assert recipient is not None
        delivery = await self.deliveries.create(Delivery(
            id=did, conversation_id=conversation_id, sender=replier,
            recipient=recipient, text=text, state=DeliveryState.PENDING,
            created_at=time.time(), meta=meta))
        if target is None:
            assert email is not None
            return NoChatAddress(did, email)
        return await self.attempt(delivery)

    async def held_back(self, mail: InboundMail, conversation_id: str, entry_id: str,
                        person: Address) -> bool:
        """An email answering a conversation that began in chat goes to ``person`` by the
        same rule as every delivery to a person: now if present, else queued and retried
        until they are back (the email's sender cannot be asked, so it waits)."""
        network = self.networks.get(person.network)
        if network is None or self._present(await network.presence(person)):
            return False
        did = delivery_id_for(f"email:{mail.message_id}|{person}")
        if await self.deliveries.get(did) is not None:
            return True  # a re-read of the same email: already held
        sender = mail.sender or Address.email("unknown@switchboard.invalid")
        delivery = await self.deliveries.create(Delivery(
            id=did, conversation_id=conversation_id, sender=sender, recipient=person,
            text=mail.body, state=DeliveryState.PENDING, created_at=time.time(),
            meta={"entry": entry_id, "email": sender.value, "person": person.value,
                  "replier_name": mail.sender_name or sender.value, "subject": mail.subject,
                  "answering": "by_email"}))
        log.info("%s is not present: the email answer %s waits for them", person, did)
        await self.queue(delivery)
        return True

    def _present(self, presence: Presence) -> bool:
        return presence is Presence.PRESENT or (
            presence is Presence.UNKNOWN and self.policy.unknown_counts_as_present)

    async def _name_of(self, user: Address) -> str:
        """How a chat person is named in notices: their account (no email is known)."""
        return user.value

    async def _entry(self, conversation_id: str, entry_id: str) -> HistoryEntry | None:
        return await self.history.entry(conversation_id, entry_id)

    async def _chat_address(self, email: Address) -> Address | None:
        identity = await self.address_book.resolve(email)
        known = [a for a in identity.addresses() if a.network in self.networks] \
            if identity else []
        if known:
            return known[0]
        for network in self.networks.values():
            try:
                found = await network.find_user(email)
            except BridgeError as exc:
                log.warning("asking %s for %s failed: %s", network.network, email, exc)
                continue
            if found is not None:
                anchor = email if identity is not None else None
                if anchor is None:
                    await self.address_book.link(email, provenance=Provenance.LEARNED,
                                                 verified=True)
                await self.address_book.link(found, provenance=Provenance.LEARNED,
                                             verified=True, to=email)
                log.info("learned %s for %s from %s", found, email, network.network)
                return found
        return None

    # --- delivering -------------------------------------------------------------------

    async def attempt(self, delivery: Delivery) -> Delivered | Unavailable | AlreadyHandled:
        """Deliver now if the recipient is there; otherwise report them unavailable."""
        network = self.networks[delivery.recipient.network]
        presence = await network.presence(delivery.recipient)
        if presence is Presence.UNKNOWN:
            log.info("%s does not report presence for %s; counted as %s by policy",
                     network.network, delivery.recipient,
                     "present" if self.policy.unknown_counts_as_present else "away")
        if not self._present(presence):
            return Unavailable(delivery.id, delivery.recipient, presence, _person(delivery))
        return await self._deliver(delivery)

    async def _deliver(self, delivery: Delivery) -> Delivered | AlreadyHandled:
        with log_context(conversation=delivery.conversation_id, delivery=delivery.id):
            return await self._deliver_now(delivery)

    async def _deliver_now(self, delivery: Delivery) -> Delivered | AlreadyHandled:
        measure = self.meter.start()
        async with self.holding(delivery.id) as held:
            if not held:
                current = await self.deliveries.get(delivery.id)
                return AlreadyHandled(delivery.id, current.state if current else
                                      delivery.state)
            return await self._deliver_held(delivery, measure)

    async def _deliver_held(self, delivery: Delivery, measure: Measure
                        ) -> Delivered | AlreadyHandled:
        current = await self.deliveries.get(delivery.id)
        if current is None or current.state.is_final:
            return AlreadyHandled(delivery.id, current.state if current else
                                  DeliveryState.CANCELLED)
        target_key = f"dm:{delivery.recipient}"
        ref = await self.conversations.posted(delivery.id, target_key)
        sent = 0
        if ref is None:
            reply = await self._chat_reply(delivery)
            # What the person is sent: the whole DM as rendered, history included.
            sent = len(render("chat/reply_dm.txt.j2", reply=reply).encode())
            network = self.networks[delivery.recipient.network]
            ref = await network.send_reply(delivery.recipient, reply, key=delivery.id)
            await self.conversations.record_post(delivery.id, target_key, ref,
                                                 delivery.conversation_id,
                                                 entry_id=delivery.id)
        entry = HistoryEntry(
            id=delivery.id, conversation_id=delivery.conversation_id, kind=EntryKind.CHAT,
            sender=delivery.sender,
            recipients=(delivery.recipient, *([Address.email(delivery.meta["email"])]
                                              if delivery.meta.get("email") else [])),
            at=time.time(), text=delivery.text, subject=delivery.meta.get("subject", ""),
            meta={"delivery": delivery.id,
                  "name": delivery.meta.get("replier_name") or delivery.sender.value})
        # An email held back for its reader is in the history already, as itself.
        held_email = delivery.meta.get("answering") == "by_email"
        stored = entry_size(entry) if not held_email and await self.history.append(entry) \
            else 0
        try:
            await self.deliveries.transition(delivery.id, DeliveryState.DELIVERED,
                                             f"delivered to {delivery.recipient}",
                                             count_attempt=True)
        except InvalidTransition as exc:
            return AlreadyHandled(delivery.id, DeliveryState(exc.current))
        self.observer.bridged("chat_to_chat", delivery.recipient.network.value)
        log.info("delivered to %s in chat", delivery.recipient)
        await self.meter.finish(measure, Service.IM_DELIVERED, customer_of(delivery.sender),
                                bytes_in=len(delivery.text.encode()), bytes_out=sent,
                                bytes_stored=stored,
                                network=delivery.recipient.network.value)
        return Delivered(delivery.id, delivery.recipient, ref, _person(delivery))

    async def _chat_reply(self, delivery: Delivery) -> ChatReply:
        page = await self.history.conversation(delivery.conversation_id, 0, HISTORY_SHOWN)
        total = await self.history.count(delivery.conversation_id)
        shown = {delivery.id, delivery.meta.get("entry", "") if
                 delivery.meta.get("answering") == "by_email" else ""}
        earlier = tuple(reversed([e for e in page.entries if e.id not in shown]))
        return ChatReply(
            delivery_id=delivery.id, conversation_id=delivery.conversation_id,
            replier=delivery.meta.get("replier_name") or delivery.sender.value,
            subject=delivery.meta.get("subject", ""), answering=_person(delivery),
            text=delivery.text, history=earlier, older=max(0, total - len(earlier)),
            answering_kind=delivery.meta.get("answering")
            or ("email" if delivery.meta.get("entry") else "new"))

    # --- the replier's choices --------------------------------------------------------

    async def choose(self, delivery_id: str, choice: str, chooser: Address) -> ReplyOutcome:
        delivery = await self.deliveries.get(delivery_id)
        if delivery is None or delivery.sender != chooser:
            return CannotReply("that reply is not yours or no longer exists")
        if delivery.state.is_final:
            return AlreadyHandled(delivery.id, delivery.state)
        if choice == "queue":
            return await self.queue(delivery)
        if choice == "cancel":
            return await self.cancel(delivery)
        if choice == "sendmail":
            return await self.send_as_email(delivery)
        return CannotReply(f"unknown choice {choice!r}")

    async def queue(self, delivery: Delivery) -> Queued | AlreadyHandled:
        """Queue and retry: one chain of retry jobs per delivery, however often the
        choice is clicked (a double click, a click in two clients)."""
        chain_ttl = self.policy.retry_deadline + self.policy.retry_interval
        if not await self.deliveries.claim(_chain(delivery.id), "queue", chain_ttl):
            current = await self.deliveries.get(delivery.id)
            return AlreadyHandled(delivery.id, current.state if current else delivery.state)
        try:
            queued = await self.deliveries.transition(
                delivery.id, DeliveryState.QUEUED,
                f"waiting for {delivery.recipient}; checking every "
                f"{self.policy.retry_interval:.0f} s")
        except InvalidTransition as exc:
            return AlreadyHandled(delivery.id, DeliveryState(exc.current))
        await self.scheduler.schedule_retry(delivery.id, len(queued.changes),
                                            self.policy.retry_interval)
        return Queued(delivery.id, delivery.recipient, _person(delivery))

    async def cancel(self, delivery: Delivery) -> Cancelled | AlreadyHandled:
        try:
            await self.deliveries.transition(delivery.id, DeliveryState.CANCELLED,
                                             "cancelled by the replier")
        except InvalidTransition as exc:
            return AlreadyHandled(delivery.id, DeliveryState(exc.current))
        return Cancelled(delivery.id)

    async def send_as_email(self, delivery: Delivery) -> Emailed | AlreadyHandled | CannotReply:
        if self.mailer is None:
            return CannotReply("Switchboard has no SMTP server configured, so it cannot send "
                               "email; ask the administrator to set SWITCHBOARD_SMTP_HOST")
        async with self.holding(delivery.id) as held:
            if not held:
                return AlreadyHandled(delivery.id, delivery.state)
            current = await self.deliveries.get(delivery.id)
            if current is None or current.state.is_final:
                return AlreadyHandled(delivery.id, current.state if current else
                                      DeliveryState.CANCELLED)
            if not delivery.meta.get("email"):
                return CannotReply(f"{_person(delivery)} has no email address Switchboard "
                                   "knows; they can add one with the `link` command")
            to = Address.email(delivery.meta["email"])
            answered = await self._entry(delivery.conversation_id, delivery.meta["entry"]) \
                if delivery.meta.get("entry") else None
            refused = await self.refused_mail(delivery.sender, to, answered, delivery.id)
            if refused is not None:
                return refused
            measure = self.meter.start()
            message = await self._email(current, to)
            await self.mailer.send(message)
            await self.meter.finish(measure, Service.EMAIL_SENT, customer_of(delivery.sender),
                                    bytes_in=len(delivery.text.encode()),
                                    bytes_out=message_size(message), by="sendmail")
            await self.history.append(HistoryEntry(
                id=delivery.id, conversation_id=delivery.conversation_id,
                kind=EntryKind.EMAIL, sender=delivery.sender, recipients=(to,),
                at=time.time(), text=delivery.text, subject=str(message["Subject"]),
                meta={"delivery": delivery.id, "message_id": str(message["Message-ID"])}))
            await self.conversations.remember_message(str(message["Message-ID"]),
                                                      delivery.conversation_id)
            try:
                await self.deliveries.transition(delivery.id, DeliveryState.EMAILED,
                                                 f"sent by email to {to.value}")
            except InvalidTransition as exc:
                return AlreadyHandled(delivery.id, DeliveryState(exc.current))
            self.observer.bridged("chat_to_email", "email")
            return Emailed(delivery.id, to)

    async def _email(self, delivery: Delivery, to: Address) -> EmailMessage:
        p = self.policy
        answered = await self._entry(delivery.conversation_id, delivery.meta["entry"])
        page = await self.history.conversation(delivery.conversation_id, 0, HISTORY_SHOWN)
        token = await self.tokens.issue(delivery.conversation_id, to, p.reply_token_ttl)
        return compose_reply(
            bot_email=p.bot_email, reply_domain=p.reply_domain,
            sender_name=delivery.meta.get("replier_name") or delivery.sender.value,
            sender=delivery.sender, to=to,
            text=delivery.text, subject=delivery.meta.get("subject", ""), token=token,
            message_key=delivery.id, answering=answered,
            history=tuple(reversed(page.entries)))

    # --- the retry job ----------------------------------------------------------------

    async def retry(self, delivery_id: str) -> ReplyOutcome:
        """One scheduled check of a queued delivery: deliver, wait again, or ask Bob."""
        delivery = await self.deliveries.get(delivery_id)
        if delivery is None:
            return CannotReply(f"there is no delivery {delivery_id}")
        if delivery.state is not DeliveryState.QUEUED:
            return AlreadyHandled(delivery.id, delivery.state)
        measure = self.meter.start()
        outcome = await self.attempt(delivery)
        await self.meter.finish(measure, Service.RETRY, customer_of(delivery.sender),
                                outcome=type(outcome).__name__)
        if isinstance(outcome, Unavailable):
            queued_at = next((c.at for c in delivery.changes
                              if c.state is DeliveryState.QUEUED), delivery.created_at)
            if time.time() - queued_at >= self.policy.retry_deadline:
                await self.deliveries.transition(
                    delivery.id, DeliveryState.FAILED,
                    f"{delivery.recipient} did not come back before the deadline")
                await self.deliveries.release(_chain(delivery.id))  # it may be queued again
                await self.tell(delivery, Notice(
                    render("chat/notice_deadline.txt.j2", delivery=delivery),
                    choices=choices_for(delivery.id)))
                return outcome
            await self.deliveries.transition(delivery.id, DeliveryState.QUEUED,
                                             f"{delivery.recipient} still away",
                                             count_attempt=True)
            await self.scheduler.schedule_retry(delivery.id, len(delivery.changes) + 1,
                                                self.policy.retry_interval)
            return outcome
        if isinstance(outcome, Delivered):
            await self.tell(delivery, Notice(render("chat/notice_delivered.txt.j2",
                                                    delivery=delivery, where=outcome.where)))
        return outcome

    async def tell(self, delivery: Delivery, notice: Notice) -> None:
        """Tell the replier, where they replied from when known."""
        where = None
        if delivery.meta.get("where_room"):
            network = Network(delivery.meta["where_network"])
            where = ChatRef(network, delivery.meta["where_room"],
                            delivery.meta.get("where_thread", ""),
                            delivery.meta.get("where_thread", ""))
        network_of_replier = self.networks.get(delivery.sender.network)
        if network_of_replier is None:
            log.warning("cannot tell %s: %s is not connected", delivery.sender,
                        delivery.sender.network)
            return
        await network_of_replier.notify(delivery.sender, notice, where)


def choices_for(delivery_id: str) -> tuple[Choice, ...]:
    return (Choice("queue", "Queue and retry", delivery_id),
            Choice("sendmail", "Send as email", delivery_id),
            Choice("cancel", "Cancel", delivery_id))


def notice_for(outcome: ReplyOutcome, retry_interval: float = 60) -> Notice:
    """What the replier is told about an outcome, with the choices left to them."""
    kind = type(outcome).__name__
    text = render("chat/reply_outcome.txt.j2", kind=kind, o=outcome,
                  interval=int(retry_interval))
    if isinstance(outcome, Unavailable):
        return Notice(text, choices_for(outcome.delivery_id))
    if isinstance(outcome, NoChatAddress):
        return Notice(text, tuple(c for c in choices_for(outcome.delivery_id)
                                  if c.action != "queue"))
    return Notice(text)
