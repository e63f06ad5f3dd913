"""Reply by email to a chat message (or to an email's post): find the author's email
address, send the text with the conversation's history, threaded, and confirm.

Answers that come back to the reply address land in the conversation's chat threads
(see inbound_email); this module only sends.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass

from bot.errors import BridgeError
from bot.flows.outgoing import compose_reply
from bot.flows.reply_in_chat import (
    HISTORY_SHOWN,
    AlreadyHandled,
    CannotReply,
    ReplyFlow,
    delivery_id_for,
)
from bot.logs import log_context
from bot.metering import Service, customer_of, entry_size, message_size
from bot.model import (
    Address,
    ChatRef,
    ChatTarget,
    Delivery,
    DeliveryState,
    EntryKind,
    HistoryEntry,
    Network,
)
from bot.ports import Notice
from bot.stores import RetryScheduler

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EmailSent:
    delivery_id: str
    to: Address


@dataclass(frozen=True)
class EmailQueued:
    """The mail server was unavailable; the retry job sends it when the server is back."""

    delivery_id: str
    to: Address
    reason: str


EmailOutcome = EmailSent | EmailQueued | AlreadyHandled | CannotReply


def notice_for_email(outcome: EmailOutcome) -> Notice:
    if isinstance(outcome, EmailSent):
        return Notice(f"Sent by email to {outcome.to.value}, with the conversation so far. "
                      "Their answer will come back here.")
    if isinstance(outcome, EmailQueued):
        return Notice(f"The mail server is unavailable ({outcome.reason}). Your email to "
                      f"{outcome.to.value} is queued and will be sent as soon as it is back.")
    if isinstance(outcome, AlreadyHandled):
        return Notice(f"That reply was already handled (it is {outcome.state.value}).")
    return Notice(f"Your email could not be sent: {outcome.reason}.")


def chat_message_ids(network: Network, room: str, message: str) -> tuple[str, str]:
    """A conversation and entry id for a chat message Switchboard did not post itself."""
    digest = hashlib.sha256(f"{network}:{room}:{message}".encode()).hexdigest()
    return "s" + digest[:24], "x" + digest[:24]


@dataclass(kw_only=True)
class ReplyByEmail(ReplyFlow):
    scheduler: RetryScheduler | None = None  # None: a mail-server outage fails the reply
    async def answerable(self, *, network: Network, room: str, message: str,
                         author: Address, text: str, at: float, thread: str = ""
                         ) -> tuple[str, str]:
        """(conversation, entry) of any chat message: what Switchboard posted it for, or,
        for someone else's message (a Slack shortcut's target), the message itself, kept
        now so it can be answered and carried as history. Its thread becomes the
        conversation's thread there, so the email answer comes back into it."""
        shown = await self.conversations.shown_in(network, room, message)
        if shown is not None:
            return shown
        cid, eid = chat_message_ids(network, room, message)
        await self.history.append(HistoryEntry(
            id=eid, conversation_id=cid, kind=EntryKind.CHAT, sender=author, recipients=(),
            at=at, text=text, meta={"chat": f"{network}:{room}:{message}"}))
        target = ChatTarget(network, room=room)
        await self.conversations.record_post(
            f"chat:{network}:{room}:{message}", target.key,
            ChatRef(network, room, message, thread or message), cid, entry_id=eid)
        return cid, eid

    async def start_new(self, *, sender: Address, sender_name: str, to: Address, text: str,
                        request: str) -> EmailOutcome:
        """A new email thread from chat (`email <address> <text>`)."""
        if not text.strip():
            return CannotReply("the email is empty; write `email <address> <text>`")
        if self.mailer is None:
            return CannotReply("Switchboard has no SMTP server configured, so it cannot "
                               "send email; ask the administrator to set SWITCHBOARD_SMTP_HOST")
        cid = "n" + hashlib.sha256(request.encode()).hexdigest()[:24]
        return await self._start(replier=sender, replier_name=sender_name, cid=cid,
                                 answered=None, to=to, text=text.strip(), request=request,
                                 subject=_first_line(text))

    async def start(self, *, replier: Address, replier_name: str, conversation_id: str,
                    entry_id: str, text: str, request: str) -> EmailOutcome:
        text = text.strip()
        if not text:
            return CannotReply("the email is empty; type what you want to say")
        if self.mailer is None:
            return CannotReply("Switchboard has no SMTP server configured, so it cannot "
                               "send email; ask the administrator to set SWITCHBOARD_SMTP_HOST")
        answered = await self.history.entry(conversation_id, entry_id)
        if answered is None:
            return CannotReply("that message is not one Switchboard knows")
        to = await self.email_of(answered.sender)
        if to is None:
            return CannotReply(f"{answered.sender.value} has no email address Switchboard "
                               "knows; they can add one with the `link` command")
        return await self._start(replier=replier, replier_name=replier_name,
                                 cid=conversation_id, answered=answered, to=to, text=text,
                                 request=request,
                                 subject=answered.subject or _first_line(answered.text))

    async def _start(self, *, replier: Address, replier_name: str, cid: str,
                     answered: HistoryEntry | None, to: Address, text: str, request: str,
                     subject: str) -> EmailOutcome:
        conversation_id = cid
        entry_id = answered.id if answered else ""
        did = delivery_id_for(request)
        existing = await self.deliveries.get(did)
        if existing is not None and existing.state is not DeliveryState.PENDING:
            return AlreadyHandled(did, existing.state)
        if existing is None:
            refused = await self.refused_mail(replier, to, answered, did)
            if refused is not None:
                return refused
        await self.deliveries.create(Delivery(
            id=did, conversation_id=conversation_id, sender=replier, recipient=to, text=text,
            state=DeliveryState.PENDING, created_at=time.time(),
            meta={"entry": entry_id, "email": to.value, "replier_name": replier_name,
                  "subject": subject, "by": "email"}))
        with log_context(conversation=conversation_id, delivery=did):
            return await self._send(did, replier, replier_name, conversation_id, answered,
                                    to, text, subject)

    async def _send(self, did: str, replier: Address, replier_name: str, cid: str,
                    answered: HistoryEntry | None, to: Address, text: str,
                    subject: str) -> EmailOutcome:
        assert self.mailer is not None
        async with self.holding(did) as held:
            if not held:
                return AlreadyHandled(did, DeliveryState.PENDING)
            measure = self.meter.start()
            page = await self.history.conversation(cid, 0, HISTORY_SHOWN)
            token = await self.tokens.issue(cid, to, self.policy.reply_token_ttl)
            message = compose_reply(
                bot_email=self.policy.bot_email, reply_domain=self.policy.reply_domain,
                sender_name=replier_name or replier.value, sender=replier, to=to, text=text,
                subject=subject, token=token,
                message_key=did, answering=answered, history=tuple(reversed(page.entries)))
            try:
                await self.mailer.send(message)
            except BridgeError as exc:
                return await self._failed(did, to, exc)
            entry = HistoryEntry(
                id=did, conversation_id=cid, kind=EntryKind.EMAIL, sender=replier,
                recipients=(to,), at=time.time(), text=text, subject=str(message["Subject"]),
                meta={"delivery": did, "message_id": str(message["Message-ID"]),
                      "name": replier_name or replier.value})
            stored = entry_size(entry) if await self.history.append(entry) else 0
            await self.conversations.remember_message(str(message["Message-ID"]), cid)
            await self.deliveries.transition(did, DeliveryState.EMAILED,
                                             f"sent by email to {to.value}")
            self.observer.bridged("chat_to_email", "email")
            await self.meter.finish(measure, Service.EMAIL_SENT, customer_of(replier),
                                    bytes_in=len(text.encode()),
                                    bytes_out=message_size(message), bytes_stored=stored,
                                    by="reply_by_email")
            return EmailSent(did, to)


    async def _failed(self, did: str, to: Address, exc: BridgeError) -> EmailOutcome:
        """An outage queues the email for the retry job, until the deadline; a refusal fails."""
        delivery = await self.deliveries.get(did)
        queued_at = next((c.at for c in delivery.changes if c.state is DeliveryState.QUEUED),
                         None) if delivery else None
        expired = queued_at is not None and time.time() - queued_at >= self.policy.retry_deadline
        if not exc.transient or self.scheduler is None or delivery is None or expired:
            await self.deliveries.transition(did, DeliveryState.FAILED, str(exc))
            return CannotReply(f"the mail server refused it ({exc})")
        await self.deliveries.transition(did, DeliveryState.QUEUED,
                                         f"mail server unavailable: {exc}", count_attempt=True)
        await self.scheduler.schedule_retry(did, len(delivery.changes) + 1,
                                            self.policy.retry_interval)
        return EmailQueued(did, to, str(exc))

    async def retry(self, delivery_id: str) -> EmailOutcome:
        """The retry job's turn at an email held back by a mail-server outage."""
        delivery = await self.deliveries.get(delivery_id)
        if delivery is None:
            return CannotReply(f"there is no delivery {delivery_id}")
        if delivery.state is not DeliveryState.QUEUED:
            return AlreadyHandled(delivery.id, delivery.state)
        meta = delivery.meta
        answered = await self.history.entry(delivery.conversation_id, meta["entry"]) \
            if meta.get("entry") else None
        measure = self.meter.start()
        with log_context(conversation=delivery.conversation_id, delivery=delivery.id):
            outcome = await self._send(delivery.id, delivery.sender, meta.get("replier_name", ""),
                                       delivery.conversation_id, answered,
                                       Address.email(meta["email"]), delivery.text,
                                       meta.get("subject", ""))
        await self.meter.finish(measure, Service.RETRY, customer_of(delivery.sender),
                                outcome=type(outcome).__name__, by="email")
        if not isinstance(outcome, (EmailQueued, AlreadyHandled)):
            await self._tell(delivery.sender, notice_for_email(outcome))
        return outcome

    async def _tell(self, person: Address, notice: Notice) -> None:
        network = self.networks.get(person.network)
        if network is not None:
            await network.notify(person, notice, None)


def _first_line(text: str) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line[:60]
