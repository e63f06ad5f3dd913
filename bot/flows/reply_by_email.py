"""Reply by email to a chat message (or to an email's post): find the author's email
address, send the text with the conversation's history, threaded, and confirm.

Sending, queueing while the mail server is down, and retrying are the delivery
lifecycle's (delivery.py); answers that come back to the reply address land in the
conversation's chat threads (see inbound_email).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from bot.flows.delivery import Lifecycle
from bot.flows.outcomes import AlreadyHandled, CannotReply, Emailed, EmailQueued
from bot.ids import chat_message_ids, new_thread_id
from bot.model import (
    Address,
    Answering,
    Carrier,
    ChatRef,
    ChatTarget,
    EntryKind,
    HistoryEntry,
    Network,
    ReplyContext,
)

log = logging.getLogger(__name__)

EmailOutcome = Emailed | EmailQueued | AlreadyHandled | CannotReply


MAX_COPIES = 50  # recipients of a reply to all beside the author (a mail client's own bound)


def _nobody(_: str) -> bool:
    return False


@dataclass(frozen=True)
class Recipients:
    """Who a reply by email goes to: the author, and with a reply to all the others the
    email was written to (To and Cc), as the replier saw them on the card."""

    to: Address
    cc: tuple[Address, ...] = ()


@dataclass(kw_only=True)
class ReplyByEmail(Lifecycle):
    # Whether an address is Switchboard's own (its From, mailboxes, routed addresses,
    # reply and return addresses): never copied on a reply to all.
    ours: Callable[[str], bool] = _nobody

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
        return await self._send(replier=sender, replier_name=sender_name,
                                cid=new_thread_id(request), answered=None, to=to,
                                text=text.strip(), request=request,
                                subject=_first_line(text))

    async def answered(self, conversation_id: str, entry_id: str, *, latest: bool = False
                       ) -> HistoryEntry | None:
        """What a reply answers: the entry, or with ``latest`` (a reply typed in the
        thread, not on one card) the thread's newest email that came in, so a Cc'd
        person's answer is answered to them rather than to the first author."""
        entry = await self.history.entry(conversation_id, entry_id)
        if latest and entry is not None and entry.kind is EntryKind.EMAIL:
            page = await self.history.conversation(conversation_id, 0, 20)
            return next((e for e in page.entries if e.kind is EntryKind.EMAIL
                         and "delivery" not in e.meta and e.sender.network is Network.EMAIL),
                        entry)
        return entry

    async def recipients(self, replier: Address, answered: HistoryEntry, *,
                         reply_all: bool = False) -> Recipients | CannotReply:
        to = await self.email_of(answered.sender)
        if to is None:
            return CannotReply(f"{answered.sender.value} has no email address Switchboard "
                               "knows; they can add one with the `link` command")
        if not reply_all:
            return Recipients(to)
        mine = await self.email_of(replier)
        skip = {to.value, mine.value if mine else ""}
        cc: list[Address] = []
        for value in (*answered.meta.get("to", "").split(), *answered.meta.get("cc", "").split()):
            if value in skip or self.ours(value):
                continue
            skip.add(value)
            cc.append(Address.email(value))
        return Recipients(to, tuple(cc[:MAX_COPIES]))

    async def start(self, *, replier: Address, replier_name: str, conversation_id: str,
                    entry_id: str, text: str, request: str, reply_all: bool = False,
                    latest: bool = False) -> EmailOutcome:
        text = text.strip()
        if not text:
            return CannotReply("the email is empty; type what you want to say")
        answered = await self.answered(conversation_id, entry_id, latest=latest)
        if answered is None:
            return CannotReply("that message is not one Switchboard knows")
        chosen = await self.recipients(replier, answered, reply_all=reply_all)
        if isinstance(chosen, CannotReply):
            return chosen
        return await self._send(replier=replier, replier_name=replier_name,
                                cid=conversation_id, answered=answered, to=chosen.to,
                                text=text, request=request, cc=chosen.cc,
                                subject=answered.subject or _first_line(answered.text))

    async def forward(self, *, replier: Address, replier_name: str, conversation_id: str,
                      entry_id: str, to: Address, note: str, request: str,
                      latest: bool = False) -> EmailOutcome:
        """The email, forwarded to ``to`` with a note above it: recorded in the
        conversation, and an answer to it comes back into the thread."""
        original = await self.answered(conversation_id, entry_id, latest=latest)
        if original is None or original.kind is not EntryKind.EMAIL:
            return CannotReply("only an email can be forwarded, and that message is not one")
        if self.ours(to.value):
            return CannotReply(f"{to.value} is one of Switchboard's own addresses")
        if self.mailer is None:
            return CannotReply("Switchboard has no SMTP server configured, so it cannot "
                               "send email; ask the administrator to set SWITCHBOARD_SMTP_HOST")
        made = await self.create(
            request=request, conversation_id=conversation_id, sender=replier, recipient=to,
            text=note.strip(), context=ReplyContext(
                carrier=Carrier.EMAIL, answering=Answering.FORWARD, entry=original.id,
                email=to, person=to.value, replier_name=replier_name,
                subject=original.subject))
        if isinstance(made, AlreadyHandled):
            return made
        return await self.send_by_email(made)

    async def _send(self, *, replier: Address, replier_name: str, cid: str,
                    answered: HistoryEntry | None, to: Address, text: str, request: str,
                    subject: str, cc: tuple[Address, ...] = ()) -> EmailOutcome:
        if self.mailer is None:
            return CannotReply("Switchboard has no SMTP server configured, so it cannot "
                               "send email; ask the administrator to set SWITCHBOARD_SMTP_HOST")
        made = await self.create(
            request=request, conversation_id=cid, sender=replier, recipient=to, text=text,
            context=ReplyContext(
                carrier=Carrier.EMAIL,
                answering=Answering.NEW if answered is None else
                Answering.CHAT if answered.kind is EntryKind.CHAT else Answering.EMAIL,
                entry=answered.id if answered else "", email=to, person=to.value,
                replier_name=replier_name, subject=subject, cc=cc))
        if isinstance(made, AlreadyHandled):
            return made
        return await self.send_by_email(made)


def _first_line(text: str) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line[:60]
