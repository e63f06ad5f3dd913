"""One delivery's life, the same whichever way it goes.

A delivery is made once per request (a double click finds it there), claimed while it
is worked on (a second worker backs off), sent in chat or by email, queued and retried
while it cannot go (the person is away, the mail server is down), and its replier is
told what happened. Replying in chat and replying by email are two ways into this one
lifecycle (see reply_in_chat and reply_by_email), so they cannot drift apart.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field, replace

from bot.errors import AddressTaken, BridgeError, InvalidTransition, StoreError
from bot.flows.outcomes import (
    AlreadyHandled,
    Cancelled,
    CannotReply,
    Delivered,
    EmailBounced,
    Emailed,
    EmailQueued,
    Outcome,
    Queued,
    Unavailable,
    choices_for,
    notice_for,
)
from bot.flows.outgoing import bounce_token_for, compose_forward, compose_reply
from bot.ids import delivery_id_for, retry_chain
from bot.logs import log_context
from bot.metering import Meter, Service, customer_of, entry_size, message_size
from bot.model import (
    Address,
    Answering,
    Carrier,
    Delivery,
    DeliveryState,
    EntryKind,
    HistoryEntry,
    Network,
    Presence,
    Provenance,
    ReplyContext,
)
from bot.permissions import Permissions
from bot.ports import ChatNetwork, ChatReply, MailSender, Notice, Observer, Unobserved
from bot.render import render
from bot.stores import AddressBook, Conversations, Deliveries, History, RetryScheduler, Tokens

log = logging.getLogger(__name__)

HISTORY_SHOWN = 10  # earlier exchanges carried with a reply; older ones are folded
# A claim on a delivery lives this long unless its holder renews it (every third of it)
# while it sends: a worker killed mid-send lets another take over within seconds.
CLAIM_SECONDS = 15.0


@dataclass(frozen=True)
class Policy:
    retry_interval: float
    retry_deadline: float
    unknown_counts_as_present: bool
    reply_token_ttl: int
    bot_email: str
    reply_domain: str


@dataclass(kw_only=True)
class Lifecycle:
    """Create, claim, send in chat, send by email, queue, retry, tell."""

    networks: Mapping[Network, ChatNetwork]
    address_book: AddressBook
    history: History
    deliveries: Deliveries
    conversations: Conversations
    tokens: Tokens
    mailer: MailSender | None
    policy: Policy
    scheduler: RetryScheduler | None = None  # None: nothing waits (one-off programs)
    observer: Observer = field(default_factory=Unobserved)  # counts for monitoring
    meter: Meter = field(default_factory=Meter)  # usage per customer, for charges
    permissions: Permissions | None = None  # None: everyone may everything (unit tests)
    worker: str = "switchboard"  # names the claims this process takes

    # --- create ---------------------------------------------------------------------

    async def create(self, *, request: str, conversation_id: str, sender: Address,
                     recipient: Address, text: str, context: ReplyContext
                     ) -> Delivery | AlreadyHandled:
        """The request's delivery: made the first time, found again after (unless it
        has moved on, which makes the request a repeat)."""
        did = delivery_id_for(request)
        existing = await self.deliveries.get(did)
        if existing is not None:
            return existing if existing.state is DeliveryState.PENDING else \
                AlreadyHandled(did, existing.state)
        return await self.deliveries.create(Delivery(
            id=did, conversation_id=conversation_id, sender=sender, recipient=recipient,
            text=text, state=DeliveryState.PENDING, created_at=time.time(), context=context))

    # --- claim ----------------------------------------------------------------------

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

    async def _current(self, delivery: Delivery) -> Delivery | AlreadyHandled:
        """The delivery as it is now, unless it is over (someone else finished it)."""
        current = await self.deliveries.get(delivery.id)
        if current is None or current.state.is_final:
            return AlreadyHandled(delivery.id, current.state if current else
                                  DeliveryState.CANCELLED)
        return current

    # --- send in chat ---------------------------------------------------------------

    def present(self, presence: Presence) -> bool:
        return presence is Presence.PRESENT or (
            presence is Presence.UNKNOWN and self.policy.unknown_counts_as_present)

    async def attempt(self, delivery: Delivery) -> Delivered | Unavailable | AlreadyHandled:
        """Deliver now if the recipient is there; otherwise report them unavailable."""
        network = self.networks[delivery.recipient.network]
        presence = await network.presence(delivery.recipient)
        if presence is Presence.UNKNOWN:
            log.info("%s does not report presence for %s; counted as %s by policy",
                     network.network, delivery.recipient,
                     "present" if self.policy.unknown_counts_as_present else "away")
        if not self.present(presence):
            return Unavailable(delivery.id, delivery.recipient, presence, delivery.person)
        return await self.send_in_chat(delivery)

    async def send_in_chat(self, delivery: Delivery) -> Delivered | AlreadyHandled:
        with log_context(conversation=delivery.conversation_id, delivery=delivery.id):
            measure = self.meter.start()
            async with self.holding(delivery.id) as held:
                if not held:
                    current = await self.deliveries.get(delivery.id)
                    return AlreadyHandled(delivery.id, current.state if current else
                                          delivery.state)
                found = await self._current(delivery)
                if isinstance(found, AlreadyHandled):
                    return found
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
                ctx = delivery.context
                entry = HistoryEntry(
                    id=delivery.id, conversation_id=delivery.conversation_id,
                    kind=EntryKind.CHAT, sender=delivery.sender,
                    recipients=(delivery.recipient, *([ctx.email] if ctx.email else [])),
                    at=time.time(), text=delivery.text, subject=ctx.subject,
                    meta={"delivery": delivery.id, "name": delivery.sender_name})
                # An email held back for its reader is in the history already, as itself.
                held_email = ctx.answering is Answering.BY_EMAIL
                stored = entry_size(entry) if not held_email and \
                    await self.history.append(entry) else 0
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
            return Delivered(delivery.id, delivery.recipient, ref, delivery.person)

    async def _chat_reply(self, delivery: Delivery) -> ChatReply:
        page = await self.history.conversation(delivery.conversation_id, 0, HISTORY_SHOWN)
        total = await self.history.count(delivery.conversation_id)
        ctx = delivery.context
        shown = {delivery.id, ctx.entry if ctx.answering is Answering.BY_EMAIL else ""}
        earlier = tuple(reversed([e for e in page.entries if e.id not in shown]))
        return ChatReply(
            delivery_id=delivery.id, conversation_id=delivery.conversation_id,
            replier=delivery.sender_name, subject=ctx.subject, answering=delivery.person,
            text=delivery.text, history=earlier, older=max(0, total - len(earlier)),
            answering_kind=ctx.answering.value)

    # --- send by email --------------------------------------------------------------

    async def send_by_email(self, delivery: Delivery
                            ) -> Emailed | EmailQueued | AlreadyHandled | CannotReply:
        """Email the delivery to its recipient's address, threaded onto what it answers,
        with the conversation's history and a reply address that leads back to chat. A
        mail server that is down queues it for the retry job."""
        if self.mailer is None:
            return CannotReply("Switchboard has no SMTP server configured, so it cannot send "
                               "email; ask the administrator to set SWITCHBOARD_SMTP_HOST")
        to = delivery.context.email
        if to is None:
            return CannotReply(f"{delivery.person} has no email address Switchboard knows; "
                               "they can add one with the `link` command")
        with log_context(conversation=delivery.conversation_id, delivery=delivery.id):
            async with self.holding(delivery.id) as held:
                if not held:
                    return AlreadyHandled(delivery.id, delivery.state)
                found = await self._current(delivery)
                if isinstance(found, AlreadyHandled):
                    return found
                return await self._email(found, to)

    async def _email(self, delivery: Delivery, to: Address
                     ) -> Emailed | EmailQueued | AlreadyHandled | CannotReply:
        assert self.mailer is not None
        ctx = delivery.context
        answered = await self.history.entry(delivery.conversation_id, ctx.entry) \
            if ctx.entry else None
        forwarding = ctx.answering is Answering.FORWARD
        if forwarding and answered is None:
            return CannotReply("the email to forward is no longer in the history")
        # A forward starts mail to someone new: the outside-mail rule holds as for `email`.
        refused = await self.refused_mail(delivery.sender, to, None if forwarding else answered,
                                          delivery.id, copies=ctx.cc)
        if refused is not None:
            return refused
        measure = self.meter.start()
        page = await self.history.conversation(delivery.conversation_id, 0, HISTORY_SHOWN)
        token = await self.tokens.issue(delivery.conversation_id, to,
                                        self.policy.reply_token_ttl)
        # The return path names the delivery, so a bounce finds it (and is checked: the
        # token is ours, issued for it).
        bounce = await self.tokens.issue(bounce_token_for(delivery.id), to,
                                         self.policy.reply_token_ttl)
        if forwarding:
            assert answered is not None
            message = compose_forward(
                bot_email=self.policy.bot_email, reply_domain=self.policy.reply_domain,
                sender_name=delivery.sender_name, sender=delivery.sender, to=to,
                note=delivery.text, token=token, message_key=delivery.id, original=answered,
                bounce_token=bounce)
        else:
            message = compose_reply(
                bot_email=self.policy.bot_email, reply_domain=self.policy.reply_domain,
                sender_name=delivery.sender_name, sender=delivery.sender, to=to,
                text=delivery.text, subject=ctx.subject, token=token,
                message_key=delivery.id, answering=answered,
                history=tuple(reversed(page.entries)), bounce_token=bounce, cc=ctx.cc)
        try:
            await self.mailer.send(message)
        except BridgeError as exc:
            return await self._email_failed(delivery, to, exc)
        message_id = str(message["Message-ID"])
        entry = HistoryEntry(
            id=delivery.id, conversation_id=delivery.conversation_id, kind=EntryKind.EMAIL,
            sender=delivery.sender, recipients=(to, *ctx.cc), at=time.time(),
            text=delivery.text, subject=str(message["Subject"]),
            meta={"delivery": delivery.id, "message_id": message_id,
                  "name": delivery.sender_name,
                  **({"forwarded": ctx.entry} if forwarding else {})})
        stored = entry_size(entry) if await self.history.append(entry) else 0
        await self.conversations.remember_message(message_id, delivery.conversation_id)
        try:
            await self.deliveries.transition(delivery.id, DeliveryState.EMAILED,
                                             ("forwarded" if forwarding else "sent")
                                             + f" by email to {to.value}"
                                             + "".join(f", cc {a.value}" for a in ctx.cc),
                                             context=replace(ctx, carrier=Carrier.EMAIL))
        except InvalidTransition as exc:
            return AlreadyHandled(delivery.id, DeliveryState(exc.current))
        self.observer.bridged("chat_to_email", "email")
        await self.meter.finish(measure, Service.EMAIL_SENT, customer_of(delivery.sender),
                                bytes_in=len(delivery.text.encode()),
                                bytes_out=message_size(message), bytes_stored=stored,
                                by=ctx.carrier.value)
        return Emailed(delivery.id, to, ctx.cc, forwarded=forwarding)

    async def _email_failed(self, delivery: Delivery, to: Address, exc: BridgeError
                            ) -> EmailQueued | CannotReply:
        """An outage queues the email for the retry job, until the deadline; a refusal
        fails it."""
        queued_at = next((c.at for c in delivery.changes if c.state is DeliveryState.QUEUED),
                         None) if delivery.context.carrier is Carrier.EMAIL else None
        expired = queued_at is not None and \
            time.time() - queued_at >= self.policy.retry_deadline
        if not exc.transient or self.scheduler is None or expired:
            await self.deliveries.transition(delivery.id, DeliveryState.FAILED, str(exc))
            if expired:
                return CannotReply(f"the mail server stayed unavailable until the deadline "
                                   f"({exc})")
            return CannotReply(f"the mail server refused it ({exc})")
        queued = await self.deliveries.transition(
            delivery.id, DeliveryState.QUEUED, f"mail server unavailable: {exc}",
            count_attempt=True, context=replace(delivery.context, carrier=Carrier.EMAIL))
        await self.scheduler.schedule_retry(delivery.id, len(queued.changes),
                                            self.policy.retry_interval)
        return EmailQueued(delivery.id, to, str(exc))

    # --- queue, cancel ----------------------------------------------------------------

    async def queue(self, delivery: Delivery) -> Queued | AlreadyHandled | CannotReply:
        """Queue and retry: one chain of retry jobs per delivery, however often the
        choice is clicked (a double click, a click in two clients)."""
        if self.scheduler is None:
            return CannotReply("nothing here retries deliveries; send it as email instead")
        chain_ttl = self.policy.retry_deadline + self.policy.retry_interval
        if not await self.deliveries.claim(retry_chain(delivery.id), "queue", chain_ttl):
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
        return Queued(delivery.id, delivery.recipient, delivery.person)

    async def cancel(self, delivery: Delivery) -> Cancelled | AlreadyHandled:
        try:
            await self.deliveries.transition(delivery.id, DeliveryState.CANCELLED,
                                             "cancelled by the replier")
        except InvalidTransition as exc:
            return AlreadyHandled(delivery.id, DeliveryState(exc.current))
        return Cancelled(delivery.id)

    # --- retry ------------------------------------------------------------------------

    async def retry(self, delivery_id: str) -> Outcome:
        """One scheduled turn of a queued delivery, by how it travels: in chat when its
        recipient is back (or wait again, or give up at the deadline), by email when
        the mail server is back."""
        delivery = await self.deliveries.get(delivery_id)
        if delivery is None:
            return CannotReply(f"there is no delivery {delivery_id}")
        if delivery.state is not DeliveryState.QUEUED:
            return AlreadyHandled(delivery.id, delivery.state)
        measure = self.meter.start()
        outcome: Outcome
        if delivery.context.carrier is Carrier.EMAIL:
            outcome = await self.send_by_email(delivery)
        else:
            outcome = await self.attempt(delivery)
            if isinstance(outcome, Unavailable):
                outcome = await self._still_away(delivery, outcome)
        await self.meter.finish(measure, Service.RETRY, customer_of(delivery.sender),
                                outcome=type(outcome).__name__,
                                by=delivery.context.carrier.value)
        if isinstance(outcome, Delivered):
            await self.tell(delivery, Notice(render("chat/notice_delivered.txt.j2",
                                                    delivery=delivery, where=outcome.where)))
        elif isinstance(outcome, (Emailed, CannotReply)):
            await self.tell(delivery, notice_for(outcome, self.policy.retry_interval))
        return outcome

    async def _still_away(self, delivery: Delivery, outcome: Unavailable) -> Unavailable:
        queued_at = next((c.at for c in delivery.changes if c.state is DeliveryState.QUEUED),
                         delivery.created_at)
        if time.time() - queued_at >= self.policy.retry_deadline:
            await self.deliveries.transition(
                delivery.id, DeliveryState.FAILED,
                f"{delivery.recipient} did not come back before the deadline")
            await self.deliveries.release(retry_chain(delivery.id))  # it may be queued again
            await self.tell(delivery, Notice(
                render("chat/notice_deadline.txt.j2", delivery=delivery),
                choices=choices_for(delivery.id)))
            return outcome
        await self.deliveries.transition(delivery.id, DeliveryState.QUEUED,
                                         f"{delivery.recipient} still away",
                                         count_attempt=True)
        assert self.scheduler is not None
        await self.scheduler.schedule_retry(delivery.id, len(delivery.changes) + 1,
                                            self.policy.retry_interval)
        return outcome

    # --- tell -------------------------------------------------------------------------

    async def bounced(self, delivery_id: str, reason: str) -> bool:
        """The email of ``delivery_id`` came back: the delivery fails with the remote
        server's reason and the replier is told where they replied from, once (a second
        bounce of it finds it failed already). Whether it was an emailed delivery."""
        delivery = await self.deliveries.get(delivery_id)
        if delivery is None or delivery.state is not DeliveryState.EMAILED:
            return False
        to = delivery.context.email or delivery.recipient
        try:
            failed = await self.deliveries.transition(delivery_id, DeliveryState.FAILED,
                                                      f"bounced: {reason}")
        except InvalidTransition:
            return False
        log.info("delivery %s bounced: %s", delivery_id, reason)
        await self.tell(failed, notice_for(EmailBounced(delivery_id, to, reason)))
        return True

    async def tell(self, delivery: Delivery, notice: Notice) -> None:
        """Tell the replier, where they replied from when known."""
        network = self.networks.get(delivery.sender.network)
        if network is None:
            log.warning("cannot tell %s: %s is not connected", delivery.sender,
                        delivery.sender.network)
            return
        await network.notify(delivery.sender, notice, delivery.context.where)

    # --- who and whether ------------------------------------------------------------

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

    async def refused_use(self, user: Address, action: str) -> CannotReply | None:
        if self.permissions is None:
            return None
        reason = await self.permissions.may_use(user, action)
        return CannotReply(reason) if reason is not None else None

    async def refused_mail(self, sender: Address, to: Address,
                           answering: HistoryEntry | None, event: str,
                           copies: Sequence[Address] = ()) -> CannotReply | None:
        if self.permissions is None:
            return None
        reason = await self.permissions.may_mail(sender, to, answering, event, copies=copies)
        return CannotReply(reason) if reason is not None else None

