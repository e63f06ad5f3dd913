"""Reply by email to a chat message (or to an email's post): find the author's email
address, send the text with the conversation's history, threaded, and confirm.

Sending, queueing while the mail server is down, and retrying are the delivery
lifecycle's (delivery.py); answers that come back to the reply address land in the
conversation's chat threads (see inbound_email).
"""

from __future__ import annotations

import logging
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


@dataclass(kw_only=True)
class ReplyByEmail(Lifecycle):
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

    async def start(self, *, replier: Address, replier_name: str, conversation_id: str,
                    entry_id: str, text: str, request: str) -> EmailOutcome:
        text = text.strip()
        if not text:
            return CannotReply("the email is empty; type what you want to say")
        answered = await self.history.entry(conversation_id, entry_id)
        if answered is None:
            return CannotReply("that message is not one Switchboard knows")
        to = await self.email_of(answered.sender)
        if to is None:
            return CannotReply(f"{answered.sender.value} has no email address Switchboard "
                               "knows; they can add one with the `link` command")
        return await self._send(replier=replier, replier_name=replier_name,
                                cid=conversation_id, answered=answered, to=to, text=text,
                                request=request,
                                subject=answered.subject or _first_line(answered.text))

    async def _send(self, *, replier: Address, replier_name: str, cid: str,
                    answered: HistoryEntry | None, to: Address, text: str, request: str,
                    subject: str) -> EmailOutcome:
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
                replier_name=replier_name, subject=subject))
        if isinstance(made, AlreadyHandled):
            return made
        return await self.send_by_email(made)


def _first_line(text: str) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line[:60]
