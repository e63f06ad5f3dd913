"""Reply in chat to an email: find the sender in chat, check presence, deliver with the
conversation's history, or let the replier choose (queue and retry, cancel, email).

Bob answers Alice's email from chat. Alice's chat address comes from the address
book, or from the networks (learned and stored). If she is present (or her network
does not say, and the policy counts that as present) she gets a DM from the bot;
otherwise Bob chooses. Every step is a delivery state change (see delivery.py), and
every delivered reply is recorded in both parties' history.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from bot.errors import BridgeError
from bot.flows.delivery import Lifecycle
from bot.flows.outcomes import AlreadyHandled, CannotReply, NoChatAddress, Outcome
from bot.ids import held_email_delivery_id
from bot.mail import InboundMail
from bot.model import (
    Address,
    Answering,
    ChatRef,
    Delivery,
    EntryKind,
    Network,
    Provenance,
    ReplyContext,
    same_organisation,
)

log = logging.getLogger(__name__)


@dataclass(kw_only=True)
class ReplyInChat(Lifecycle):
    # --- starting a reply -----------------------------------------------------------

    async def start(self, *, replier: Address, replier_name: str, conversation_id: str,
                    entry_id: str, text: str, request: str, where: ChatRef | None = None,
                    to_email: Address | None = None) -> Outcome:
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
            email, subject, answering = to_email, "", Answering.NEW
        else:
            answered = await self.history.entry(conversation_id, entry_id)
            if answered is None:
                return CannotReply("that message is not one Switchboard knows; reply to the "
                                   "post itself")
            subject = answered.subject
            if answered.kind is EntryKind.CHAT:
                # An answer back to a reply delivered in chat: to its author, in chat.
                if answered.sender == replier:
                    return CannotReply("that is your own message; answer the person's reply "
                                       "instead")
                answering = Answering.CHAT
                if answered.sender.network in self.networks:
                    target = answered.sender
                email = await self.email_of(answered.sender) \
                    if answered.sender.network is not Network.EMAIL else answered.sender
            else:
                email, answering = answered.sender, Answering.EMAIL
        if target is None and email is not None:
            target = await self._chat_address(email, replier)
        if target is None and email is None:
            return CannotReply("Switchboard knows no chat account or email address of the "
                               "person who wrote that")
        recipient = target or email
        assert recipient is not None
        made = await self.create(
            request=request, conversation_id=conversation_id, sender=replier,
            recipient=recipient, text=text, context=ReplyContext(
                answering=answering, entry=entry_id, email=email,
                person=email.value if email else recipient.value,
                replier_name=replier_name, subject=subject, where=where))
        if isinstance(made, AlreadyHandled):
            return made
        if target is None:
            assert email is not None
            return NoChatAddress(made.id, email)
        return await self.attempt(made)

    async def held_back(self, mail: InboundMail, conversation_id: str, entry_id: str,
                        person: Address) -> bool:
        """An email answering a conversation that began in chat goes to ``person`` by the
        same rule as every delivery to a person: now if present, else queued and retried
        until they are back (the email's sender cannot be asked, so it waits)."""
        network = self.networks.get(person.network)
        if network is None or self.present(await network.presence(person)):
            return False
        did = held_email_delivery_id(mail.message_id, person)
        if await self.deliveries.get(did) is not None:
            return True  # a re-read of the same email: already held
        sender = mail.sender or Address.email("unknown@switchboard.invalid")
        made = await self.create(
            request=f"email:{mail.message_id}|{person}", conversation_id=conversation_id,
            sender=sender, recipient=person, text=mail.body, context=ReplyContext(
                answering=Answering.BY_EMAIL, entry=entry_id, email=sender,
                person=person.value, replier_name=mail.sender_name or sender.value,
                subject=mail.subject))
        if isinstance(made, Delivery):
            log.info("%s is not present: the email answer %s waits for them", person, did)
            await self.queue(made)
        return True

    async def _chat_address(self, email: Address, replier: Address) -> Address | None:
        """The chat account of ``email``'s person that ``replier`` may reach: never one
        in another Slack workspace than the replier's."""
        identity = await self.address_book.resolve(email)
        known = [a for a in identity.addresses() if a.network in self.networks
                 and same_organisation(a, replier)] if identity else []
        if known:
            return known[0]
        for network in self.networks.values():
            try:
                found = await network.find_user(email, within=replier)
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

    # --- the replier's choices --------------------------------------------------------

    async def choose(self, delivery_id: str, choice: str, chooser: Address) -> Outcome:
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
            return await self.send_by_email(delivery)
        return CannotReply(f"unknown choice {choice!r}")
