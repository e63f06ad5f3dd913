"""Email into chat: route a received email, post it, record it in history.

Routing, in order:
1. an email that answers one Switchboard already posted (In-Reply-To, then
   References) goes into that conversation's thread(s);
2. an email to a shared mailbox address with a configured route goes to that
   channel or room;
3. an email to a person whose address is in the address book goes to their DM.

Posting is at-most-once per (email, target): what was posted is recorded right
after it succeeds and checked before posting, and the network adapters carry an
idempotency key, so a re-read email or a retry never posts twice.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Protocol

from bot.attachments import AttachmentPolicy
from bot.autoreply import compose_autoreply, no_autoreply
from bot.blocks import Block, BlockList
from bot.bounces import read_bounce
from bot.errors import BridgeError, StoreError, TransientFailure
from bot.flows.outgoing import (
    BOUNCE_PREFIX,
    automatic_reason,
    bounce_message,
    delivery_of_bounce,
    is_automatic,
)
from bot.held import HELD_RAW_LIMIT, HeldMail
from bot.ids import entry_id, new_conversation_id
from bot.logs import log_context
from bot.mail import Envelope, InboundMail, SenderAuth, SenderTrust
from bot.metering import Measure, Meter, Service, Transaction
from bot.model import (
    Address,
    AttachmentRef,
    ChatRef,
    ChatTarget,
    EntryKind,
    HistoryEntry,
    Identity,
    Network,
    Refusal,
)
from bot.ports import (
    ChatNetwork,
    EmailCard,
    MailReader,
    MailSender,
    Observer,
    SenderChecks,
    Unobserved,
)
from bot.routes import (
    AttachmentRule,
    Hold,
    Route,
    RouteBook,
    address_tag,
    hold_for,
    receiving_domain,
)
from bot.stores import (
    AddressBook,
    Arrival,
    Arrivals,
    Conversations,
    History,
    Ingest,
    RateLimits,
    Tokens,
)

log = logging.getLogger(__name__)
UNCHECKED = SenderAuth(SenderTrust.UNCHECKED, "sender checks are off")
_SUBJECT_TOKEN = re.compile(r"\[sb:([a-z2-7]{8,64})\]")


@dataclass(frozen=True)
class Posted:
    conversation_id: str
    refs: tuple[ChatRef, ...]


@dataclass(frozen=True)
class Duplicate:
    conversation_id: str


@dataclass(frozen=True)
class Refused:
    reason: str


@dataclass(frozen=True)
class Bounced:
    """A bounce of Switchboard's own email: its delivery failed, its replier was told."""

    delivery_id: str
    reason: str


@dataclass(frozen=True)
class Held:
    """Held for the admins of the rooms it was for (they post it anyway, or not)."""

    ids: tuple[str, ...]
    reason: str


IngestOutcome = Posted | Duplicate | Refused | Bounced | Held
UNLIMITED = (sys.maxsize, 1)  # a rate no email reaches (an admin posts a held one)


class Reviewers(Protocol):
    async def hold(self, held: HeldMail, raw: bytes) -> bool:
        """Keep ``held`` for the admins of its room and tell them (once per email and
        room); False when it was held before."""
        ...


class PersonDeliveries(Protocol):
    async def held_back(self, mail: InboundMail, conversation_id: str, entry_id: str,
                        person: Address) -> bool:
        """Whether ``mail`` for ``person`` is held back as a queued delivery (they are
        not present): True when it is, False when it should be posted now."""
        ...

    async def bounced(self, delivery_id: str, reason: str) -> bool:
        """An emailed delivery came back: fail it and tell its replier (once)."""
        ...


class InboundEmailFlow:
    def __init__(self, *, routes: RouteBook | Sequence[Route],
                 networks: Mapping[Network, ChatNetwork],
                 address_book: AddressBook, history: History, conversations: Conversations,
                 ingest: Ingest, tokens: Tokens, mailer: MailSender | None = None,
                 bot_email: str = "", reply_domain: str = "",
                 own_addresses: Sequence[str] = (), rates: RateLimits | None = None,
                 sender_rate: tuple[int, int] = (120, 3600),
                 conversation_rate: tuple[int, int] = (60, 3600),
                 bounce_rate: tuple[int, int] = (3, 3600),
                 attachments: AttachmentPolicy | None = None,
                 reader: MailReader | None = None, checks: SenderChecks | None = None,
                 meter: Meter | None = None, observer: Observer | None = None,
                 arrivals: Arrivals, blocks: BlockList | None = None,
                 autoreply_every: int = 86400, reply_token_ttl: int = 30 * 86400) -> None:
        self.arrivals = arrivals
        self.autoreply_every = autoreply_every
        self.reply_token_ttl = reply_token_ttl
        self.blocks = blocks if blocks is not None else BlockList()
        self.reader = reader
        self.checks = checks  # None: sender checks are off, every From is believed
        self.meter = meter or Meter()
        self.observer = observer or Unobserved()
        self.rates = rates
        self.bounce_rate = bounce_rate
        self.sender_rate = sender_rate
        self.conversation_rate = conversation_rate
        self.attachment_policy = attachments or AttachmentPolicy()
        self.tokens = tokens
        self.mailer = mailer
        self.bot_email = bot_email
        self.reply_domain = reply_domain
        self.routes = routes if isinstance(routes, RouteBook) else RouteBook(routes)
        self.review: Reviewers | None = None  # None: nothing is held, it is refused
        self.review_room: ChatTarget | None = None  # where mail with no route is offered
        self.networks = networks
        self.address_book = address_book
        self.history = history
        self.conversations = conversations
        self.ingest = ingest
        self.own = {a.lower() for a in own_addresses}
        self.people: PersonDeliveries | None = None  # None: people get posts at once

    async def accepts(self, recipient: Address) -> bool:
        """Whether mail to ``recipient`` can be bridged (the SMTP listener asks)."""
        local, _, domain = recipient.value.partition("@")
        if self._route(recipient.value) is None:
            await self.routes.refresh()  # added a moment ago, in another process?
        if self._route(recipient.value) is not None or (
                domain == self.reply_domain and local.startswith(("reply+", BOUNCE_PREFIX))):
            return True
        if self.review_room is not None and self.review is not None and receiving_domain(
                recipient.value, self.routes.domains):
            return True  # offered to the review room's admins
        identity = await self.address_book.resolve(recipient)
        return identity is not None and any(
            a.network in self.networks for a in identity.addresses() if a.network
            is not Network.EMAIL)

    async def receive(self, raw: bytes, envelope: Envelope) -> IngestOutcome:
        """One raw email, whole: read it, check its sender, route, post, record, meter.
        Raises TransientFailure when it should be tried again later (an outage)."""
        assert self.reader is not None, "receive() needs a MailReader"
        measure = self.meter.start()
        # The sender check waits on DNS in a thread: let it overlap the reading.
        checking = asyncio.ensure_future(self.checks.check(raw, envelope.peer)) \
            if self.checks is not None else None
        try:
            mail = self.reader.read(raw, envelope)
        except BaseException:
            if checking is not None:
                checking.cancel()
            raise
        auth = await checking if checking is not None else UNCHECKED
        mail = replace(mail, auth=auth)
        try:
            outcome = await self.handle(mail, envelope.source, measure, raw=raw)
        except (TransientFailure, StoreError) as exc:
            self.observer.failed("ingest")
            if isinstance(exc, TransientFailure):
                raise
            raise TransientFailure(str(exc)) from exc
        if isinstance(outcome, Posted):
            for ref in outcome.refs:
                self.observer.bridged("email_to_chat", ref.network.value)
            lag = time.time() - mail.date
            if 0 <= lag < 86400:
                self.observer.ingest_lag(lag)
        elif isinstance(outcome, Refused | Held):
            self.observer.refused()
        return outcome

    async def post_held(self, held: HeldMail, raw: bytes) -> str:
        """``release``, told as the admin who decided is told."""
        outcome = await self.release(held, raw)
        if isinstance(outcome, Posted):
            return f"Posted the email from {held.sender or 'an unknown sender'}."
        if isinstance(outcome, Duplicate):
            return "It was posted already."
        if isinstance(outcome, Refused | Held):
            raise TransientFailure(outcome.reason)
        return "Done."

    async def release(self, held: HeldMail, raw: bytes) -> IngestOutcome:
        """A held email, posted where it was held for (an admin decided): its rules and
        rates pass, the sender checks stand as they were when it arrived."""
        assert self.reader is not None, "release() needs a MailReader"
        mail = self.reader.read(raw, Envelope(held.source))
        mail = replace(mail, auth=SenderAuth(SenderTrust(held.auth_trust), held.auth_summary))
        outcome = await self.handle(mail, held.source, self.meter.start(), release=held)
        if isinstance(outcome, Posted):
            for ref in outcome.refs:
                self.observer.bridged("email_to_chat", ref.network.value)
        return outcome

    async def _usage(self, measure: Measure | None, mail: InboundMail,
                     refs: Sequence[ChatRef]) -> list[Transaction]:
        """One email ingested per customer it reached, one chat post per post made (kept
        with the email's other writes, in the same step)."""
        if measure is None or not self.meter.recording:
            return []
        card = len(mail.body.encode()) + sum(a.size for a in mail.attachments if a.content)
        stored = len(mail.body.encode()) + len(mail.quoted.encode()) + len(mail.subject.encode())
        by_customer: dict[str, list[str]] = {}
        for ref in refs:
            network = self.networks.get(ref.network)
            customer = await network.customer(ref.room) if network is not None else None
            if customer is not None:
                by_customer.setdefault(customer, []).append(ref.network.value)
        txs = []
        for customer, networks in by_customer.items():
            txs += [self.meter.transaction(self.meter.start(), Service.CHAT_POST, customer,
                                           bytes_out=card, network=network)
                    for network in networks]
            txs.append(self.meter.transaction(
                measure, Service.EMAIL_INGESTED, customer, bytes_in=mail.size,
                bytes_stored=stored, attachments=str(len(mail.attachments)),
                sender_auth=mail.auth.trust.value))
        return txs

    def reply_token(self, mail: InboundMail) -> str | None:
        """The reply token the email was sent back with: in the address, else the subject."""
        for recipient in mail.recipients:
            local, _, domain = recipient.value.partition("@")
            if domain == self.reply_domain and local.startswith("reply+"):
                return local[len("reply+"):]
        found = _SUBJECT_TOKEN.search(mail.subject)
        if found and any(r.value.partition("@")[2] == self.reply_domain
                         for r in mail.recipients):
            return found.group(1)
        return None

    def bounce_token(self, mail: InboundMail) -> str | None:
        """The token of the return path (``bounce+TOKEN@reply-domain``) a bounce came to."""
        for recipient in mail.recipients:
            local, _, domain = recipient.value.partition("@")
            if domain == self.reply_domain and local.startswith(BOUNCE_PREFIX):
                return local[len(BOUNCE_PREFIX):]
        return None

    async def _bounce(self, mail: InboundMail, source: str, token: str
                      ) -> Bounced | Refused:
        """Mail to a return path: if the token is one issued for a delivery and the mail
        says it failed, that delivery fails and its replier is told; otherwise it is set
        aside like any automatic mail (never bridged, never answered)."""
        bound = await self.tokens.resolve(token)
        delivery_id = delivery_of_bounce(bound[0]) if bound else None
        if not delivery_id:
            return await self._refuse(mail, source, "not bridged: mail to a return address "
                                      "Switchboard did not issue (or that expired)")
        report = read_bounce(mail)
        if report is None or not report.failed:
            what = report.reason if report else "not a delivery report"
            return await self._refuse(mail, source, f"not bridged: {what} for a sent email")
        if self.people is None or not await self.people.bounced(delivery_id, report.reason):
            log.info("a bounce for %s, which is not an emailed delivery (now): kept aside",
                     delivery_id)
            return await self._refuse(mail, source, f"not bridged: a bounce for {delivery_id}, "
                                      "already failed or unknown")
        return Bounced(delivery_id, report.reason)

    async def handle(self, mail: InboundMail, source: str, measure: Measure | None = None,
                     *, raw: bytes | None = None, release: HeldMail | None = None
                     ) -> IngestOutcome:
        """Bridge one email. Raises TransientFailure when it should be retried later.
        ``raw``: its bytes, kept if it is held for admins; ``release``: the held email
        an admin decided to post (only there, past the rules that held it).

        Its Redis work is two round trips when it starts a conversation: what it needs
        to be routed (its rates, conversation, threads, people), with the marks that its
        posts have begun (exactly-once across a crash): ``arrive``; and what it leaves
        behind (post record, index, history, usage): ``settle``. An answer posted into a
        thread, or a DM, begins its post with one round trip more."""
        bounce = self.bounce_token(mail)
        if bounce is not None:
            return await self._bounce(mail, source, bounce)
        automatic = automatic_reason(mail, self.bot_email)
        if automatic is not None:
            return await self._refuse(mail, source, f"not bridged: {automatic}")
        everywhere = None if release else self.blocks.blocked(mail.sender, ())
        if everywhere is not None:
            return await self._blocked(mail, [everywhere])
        blocked = [a.filename for a in mail.attachments
                   if self.attachment_policy.is_blocked(a)]
        mail = self.attachment_policy.screen(mail)
        token = self.reply_token(mail)
        known = None
        if token is not None:
            bound = await self.tokens.resolve(token)
            refused = await self._check_reply(mail, source, bound)
            if refused is not None:
                return refused
            assert bound is not None
            known = bound[0]
        routed = self._routed(mail)
        stopped = {} if release else {key: b for key, (t, _) in routed.items()
                                      if (b := self._block_for(mail, t)) is not None}
        if stopped and len(stopped) == len(routed) and known is None:
            # Before its rates: nobody is told.
            return await self._blocked(mail, list(stopped.values()))
        holds = {} if release else {t.key: (r, h) for t, r in routed.values() if (
            h := hold_for(r, mail.sender, mail.auth.may_act, blocked)) is not None}
        if release is not None:
            places = [release.target.key]
        else:
            places = [key for key in routed if key not in holds and key not in stopped]
        arrival = await self.arrivals.arrive(
            message_id=mail.message_id, answers=mail.thread_ids, conversation=known,
            new_conversation=new_conversation_id(mail.message_id), sender=mail.sender,
            people=[r for r in mail.recipients
                    if self._route(r.value) is None and r.value not in self.own],
            sender_rate=UNLIMITED if release else self.sender_rate,
            conversation_rate=UNLIMITED if release else self.conversation_rate,
            new_places=[] if known else places)
        if not arrival.within_sender_rate:
            assert mail.sender is not None
            limit, window = self.sender_rate
            return await self._hold_all(mail, source, raw, routed, Hold(
                "rate", f"rate limit: more than {limit} emails from {mail.sender.value} in "
                f"{window} s"))
        with log_context(conversation=arrival.conversation_id):
            outcome = await self._handle(mail, source, arrival, measure, raw=raw, holds=holds,
                                         release=release, blocked=blocked)
            if isinstance(outcome, Posted) and not arrival.existing and release is None:
                await self._auto_reply(mail, outcome, routed)
            return outcome

    async def _auto_reply(self, mail: InboundMail, outcome: Posted,
                          routed: Mapping[str, tuple[ChatTarget, Route]]) -> None:
        """The automatic reply of a route the email started a conversation on, once per
        sender and route per period. Never fails the email: it is posted already."""
        posted = {(ref.network.value, ref.room) for ref in outcome.refs}
        route = next((r for _, r in routed.values()
                      if r.autoreply and (r.network, r.room) in posted), None)
        if route is None or self.mailer is None or mail.sender is None:
            return
        why = no_autoreply(mail)
        if why is not None:
            log.info("no automatic reply to %s: %s", mail.sender, why)
            return
        try:
            if not await self._within(f"autoreply:{route.address}:{mail.sender.value}",
                                      (1, self.autoreply_every), mail.message_id):
                return
            token = await self.tokens.issue(outcome.conversation_id, mail.sender,
                                            self.reply_token_ttl)
            await self.mailer.send(compose_autoreply(
                mail=mail, text=route.autoreply, mailbox=route.name or route.address,
                bot_email=self.bot_email, reply_domain=self.reply_domain, token=token))
            log.info("automatic reply of %s sent to %s", route.address, mail.sender)
        except (BridgeError, StoreError) as exc:
            log.warning("the automatic reply to %s was not sent: %s", mail.sender, exc)

    def _block_for(self, mail: InboundMail, target: ChatTarget) -> Block | None:
        """The block of one of ``target``'s routes that stops ``mail`` (a room's, or a
        thread's in it), or None; a person's DM follows only deployment-wide blocks."""
        if target.user is not None or self.blocks.empty:
            return None
        return self.blocks.blocked(mail.sender, [
            r.address for r in self.routes.in_room(target.network, target.room or "")])

    async def _blocked(self, mail: InboundMail, blocks: Sequence[Block]) -> Refused:
        """Neither posted nor bounced (a blocked sender learns nothing): counted, once
        per block."""
        for block in {(b.scope, b.who): b for b in blocks}.values():
            await self.blocks.stopped(block)
        reason = f"blocked: {blocks[0].describe().partition(':')[0]}"
        log.info("email %s not bridged, %s", mail.message_id, reason)
        return Refused(reason)

    def _address_of(self, address: str) -> str:
        """The address of the route ``address`` goes by ("" for none)."""
        route = self._route(address)
        return route.address if route is not None else ""

    def _route(self, address: str) -> Route | None:
        # Switchboard's own addresses are routed only by name: a catch-all takes not them.
        return self.routes.exact(address) if address in self.own else self.routes.get(address)

    def _routed(self, mail: InboundMail) -> dict[str, tuple[ChatTarget, Route]]:
        """The places the email's routes give, by target key: where it goes when it
        starts a conversation (its posts there are begun in the same step as its
        arrival)."""
        found: dict[str, tuple[ChatTarget, Route]] = {}
        for recipient in mail.recipients:
            route = self._route(recipient.value)
            if route is not None:
                found.setdefault(route.target.key, (route.target, route))
        return found

    async def _check_reply(self, mail: InboundMail, source: str,
                           bound: tuple[str, Address] | None) -> Refused | None:
        """An answer to an email Switchboard sent goes into that conversation, or is
        refused (and bounced, when the sender provably wrote it)."""
        if bound is None:
            return await self._refuse(mail, source, "the reply address has expired or is not "
                                      "valid", bounce=True)
        if not mail.auth.may_act:
            # No bounce: the From may be forged, and the real owner never wrote.
            return await self._refuse(mail, source, "a reply address works only for mail "
                                      f"whose sender is authenticated ({mail.auth.summary})")
        if mail.sender != bound[1] and not await self._copied(bound[0], mail.sender):
            return await self._refuse(mail, source, "the reply address was given to another "
                                      "sender", bounce=True)
        return None

    async def _copied(self, conversation: str, sender: Address | None) -> bool:
        """Whether ``sender`` was sent this conversation's reply address too: copied on
        a reply to all (the address is the same for everyone an email went to)."""
        if sender is None:
            return False
        page = await self.history.conversation(conversation, 0, 50)
        return any(sender in e.recipients for e in page.entries if "delivery" in e.meta)

    async def _within(self, key: str, rate: tuple[int, int], event: str) -> bool:
        return self.rates is None or await self.rates.hit(key, *rate, event)

    async def _handle(self, mail: InboundMail, source: str, arrival: Arrival,
                      measure: Measure | None, *, raw: bytes | None,
                      holds: Mapping[str, tuple[Route, Hold]], release: HeldMail | None,
                      blocked: Sequence[str]) -> IngestOutcome:
        cid = arrival.conversation_id
        existing = cid if arrival.existing else None
        # Two auto-responders that slip past the loop guard still stop here.
        if not arrival.within_conversation_rate:
            limit, window = self.conversation_rate
            return await self._hold_all(mail, source, raw, self._routed(mail), Hold(
                "rate", f"rate limit: more than {limit} emails in this conversation in "
                f"{window} s"))
        threads = arrival.threads
        if release is not None:
            targets, to_people = [release.target], False
        else:
            targets, to_people = await self._targets(mail, existing, threads,
                                                     arrival.identities)
            if not targets and await self.routes.refresh():
                # A route added a moment ago in another process: looked for once more.
                targets, to_people = await self._targets(mail, existing, threads,
                                                         arrival.identities)
        held: list[str] = []
        kept_back: list[str] = []  # why targets were not posted to (held, or refused)
        stopped: list[Block] = []
        for target in list(targets):
            if release is not None or target.user is not None:
                continue
            block = self._block_for(mail, target)
            if block is not None:
                targets.remove(target)
                stopped.append(block)
                continue
            route_hold = holds.get(target.key)
            if route_hold is None:  # a thread in a room: its strictest route's rules hold
                route = self.routes.strictest(target.network, target.room or "")
                found = route and hold_for(route, mail.sender, mail.auth.may_act, blocked)
                route_hold = (route, found) if route and found else None
            if route_hold is not None:
                targets.remove(target)
                kept_back.append(route_hold[1].reason)
                if await self._hold(mail, source, raw, target, route_hold[0].address,
                                    route_hold[1]):
                    held.append(route_hold[1].reason)
        if stopped and not targets:
            return await self._blocked(mail, stopped)
        if stopped:
            await self._blocked(mail, stopped)
        if not targets and held:
            return Held((), held[0])
        if not targets and kept_back:
            return Refused(kept_back[0])  # each refused with its reason by _hold
        if not targets:
            reason = ("no route: none of the recipients "
                      f"({', '.join(a.value for a in mail.recipients) or 'none'}) has a "
                      "configured channel, room or chat account")
            if self.review_room is not None and any(
                    receiving_domain(r.value, self.routes.domains) for r in mail.recipients):
                if await self._hold(mail, source, raw, self.review_room, "",
                                    Hold("no_route", reason)):
                    return Held((), reason)
                return Refused(reason)
            return await self._refuse(mail, source, reason)
        key = mail.message_id
        eid = entry_id(key)
        general = EmailCard(
            conversation_id=cid, entry_id=eid,
            sender=self._sender_text(mail), subject=mail.subject, body=mail.body,
            quoted_lines=len(mail.quoted.splitlines()) if mail.quoted else 0,
            notes=mail.notes, attachments=mail.attachments, is_reply=existing is not None,
            verified=mail.auth.may_act, auth=mail.auth.summary,
            identity=self._identity(mail, arrival.identities),
            to=_shown(mail.to), cc=_shown(mail.cc))
        refs: list[ChatRef] = []
        fresh = queued = 0
        last: tuple[str, ChatRef] | None = None  # recorded with the rest, in one step
        for target in targets:
            network = self.networks.get(target.network)
            if network is None:
                log.warning("no %s connection for %s; skipped", target.network, target.key)
                continue
            if to_people and target.user is not None and self.people is not None \
                    and await self.people.held_back(mail, cid, eid, target.user):
                queued += 1  # not there: the retry job delivers it when they are back
                continue
            card = self._card_for(general, target, mail)
            if last is not None:  # another place follows: the post before is kept now
                await self.conversations.record_post(key, last[0], last[1], cid,
                                                     mail.message_id, eid)
                last = None
            done, interrupted = arrival.begun[target.key] if target.key in arrival.begun \
                else await self.conversations.begin_post(key, target.key)
            if done is not None:
                refs.append(done)
                continue
            try:
                ref = await network.post_email(target, card, thread=threads.get(target.key),
                                               key=f"{key}|{target.key}", resume=interrupted)
            except BridgeError as exc:
                if exc.transient:
                    raise TransientFailure(str(exc)) from exc
                await self._refuse(mail, source, f"{target.key}: {exc}")
                continue
            last = (target.key, ref)
            refs.append(ref)
            fresh += 1
        if not refs and not queued:
            return Refused(f"could not be posted to any of {len(targets)} targets")
        usage = await self._usage(measure, mail, refs) if fresh or queued else []
        await self.arrivals.settle(message_key=key, target_key=last[0] if last else "",
                                   ref=last[1] if last else None,
                                   entry=self._entry(mail, cid, eid, refs), usage=usage)
        if not fresh and not queued:
            return Duplicate(cid)
        log.info("email %s posted to %d place(s) in conversation %s", eid, fresh, cid)
        return Posted(cid, tuple(refs))

    def _card_for(self, card: EmailCard, target: ChatTarget, mail: InboundMail) -> EmailCard:
        """The card as ``target``'s route shows it: its mailbox's name and the tag of
        the address it came to, its files rule."""
        if target.user is not None:
            return card
        routes = self.routes.in_room(target.network, target.room or "")
        if not routes:
            return card
        by_address = {r.address: r for r in routes}
        came_to, route = next(((r.value, by_address[a]) for r in mail.recipients
                               if (a := self._address_of(r.value)) in by_address),
                              ("", routes[0]))
        if route.name:
            named = f"{route.name} <{route.address}>"
            card = replace(card, mailbox=named, to=tuple(
                named if shown in (route.address, came_to) else shown for shown in card.to))
        if address_tag(came_to):
            card = replace(card, tag=address_tag(came_to))
        if any(r.attachments is AttachmentRule.NAMES for r in routes) and card.attachments:
            card = replace(card, attachments=tuple(replace(a, content=b"")
                                                   for a in card.attachments),
                           notes=(*card.notes, "Files are not posted in this room (its route "
                                  "lists them by name); they are in the mailbox."))
        return card

    async def _hold_all(self, mail: InboundMail, source: str, raw: bytes | None,
                        routed: Mapping[str, tuple[ChatTarget, Route]], hold: Hold
                        ) -> IngestOutcome:
        """Held for every routed room of the email; refused when it has none (a DM, an
        answer in a thread: rates protect people from floods, nobody reviews those)."""
        if self.review is None or not routed:
            return await self._refuse(mail, source, hold.reason)
        held = [await self._hold(mail, source, raw, target, route.address, hold)
                for target, route in routed.values()]
        # Not held: each was refused with its reason (too large to keep).
        return Held((), hold.reason) if any(held) else Refused(hold.reason)

    async def _hold(self, mail: InboundMail, source: str, raw: bytes | None,
                    target: ChatTarget, route: str, hold: Hold) -> bool:
        """Keep the email for ``target``'s admins; False (refused, with the reason) when
        it cannot be (nobody reviews here, or it is too large to keep)."""
        if self.review is None or raw is None:
            await self._refuse(mail, source, f"{target.key}: {hold.reason}")
            return False
        if len(raw) > HELD_RAW_LIMIT:
            await self._refuse(mail, source, f"{target.key}: {hold.reason} (and at "
                               f"{len(raw):,} bytes it is too large to hold for review)")
            return False
        held_id = "h" + hashlib.sha256(f"{mail.message_id}|{target.key}".encode()
                                       ).hexdigest()[:16]
        record = HeldMail(
            id=held_id, at=time.time(), kind=hold.kind, reason=hold.reason, route=route,
            network=target.network.value, room=target.room or "",
            sender=mail.sender.value if mail.sender else "",
            sender_name=" ".join(mail.sender_name.split())[:200],
            subject=" ".join(mail.subject.split())[:300],
            preview=" ".join(mail.body.split())[:300], message_id=mail.message_id,
            source=source, auth_trust=mail.auth.trust.value, auth_summary=mail.auth.summary)
        log.info("email %s held for the admins of %s: %s", mail.message_id, target.key,
                 hold.reason)
        await self.review.hold(record, raw)
        return True

    @staticmethod
    def _identity(mail: InboundMail, identities: Mapping[Address, Identity]
                  ) -> tuple[Address, ...]:
        """The sender's chat accounts, only when the From address is authenticated."""
        if mail.sender is None or not mail.auth.may_act:
            return ()
        identity = identities.get(mail.sender)
        return tuple(a for a in (identity.addresses() if identity else ())
                     if a.network is not Network.EMAIL)

    async def _targets(self, mail: InboundMail, conversation: str | None,
                       threads: dict[str, ChatRef], identities: Mapping[Address, Identity]
                       ) -> tuple[list[ChatTarget], bool]:
        """Where the email goes, and whether those are people (an answer to a
        conversation that began in chat, for who wrote in it) rather than channels,
        rooms or an address's own DM."""
        own: set[Address] = set()
        if mail.sender is not None:
            writer = identities.get(mail.sender)
            own = set(writer.addresses()) if writer else {mail.sender}
        if conversation is not None:
            # The author of an email is never its audience: a thread in her own DM (where
            # someone's reply reached her) does not get her next email.
            targets = [_target_of(key, ref) for key, ref in threads.items()
                       if not (key.startswith("dm:") and Address.parse(key[3:]) in own)]
            if targets:
                return targets, False
            # A conversation that started in chat (a message answered by email) has no
            # thread of ours: the answer goes to the chat people who wrote in it.
            page = await self.history.conversation(conversation, 0, 20)
            writers = own if mail.auth.may_act else set()
            people = dict.fromkeys(e.sender for e in page.entries
                                   if e.sender.network in self.networks
                                   and e.sender not in writers)
            if people:
                return [ChatTarget.dm(p) for p in people], True
        found: dict[str, ChatTarget] = {}
        for recipient in mail.recipients:
            route = self._route(recipient.value)
            if route is not None:
                found.setdefault(route.target.key, route.target)
                continue
            if recipient.value in self.own:
                continue  # the bot's own address is never a person's DM
            identity = identities.get(recipient)
            chat = [a for a in (identity.addresses() if identity else [])
                    if a.network is not Network.EMAIL and a.network in self.networks]
            if chat:
                target = ChatTarget.dm(chat[0])
                found.setdefault(target.key, target)
        return list(found.values()), False

    async def _refuse(self, mail: InboundMail, source: str, reason: str,
                      bounce: bool = False) -> Refused:
        log.warning("email %s refused: %s", mail.message_id, reason)
        await self.ingest.refuse(Refusal(time.time(), source, mail.message_id,
                                         mail.sender.value if mail.sender else "",
                                         mail.subject, reason))
        if bounce and await self._may_bounce(mail):
            assert self.mailer is not None and mail.sender is not None
            try:
                await self.mailer.send(bounce_message(mail, reason, self.bot_email))
            except BridgeError as exc:
                log.warning("could not tell %s why: %s", mail.sender, exc)
        return Refused(reason)

    async def _may_bounce(self, mail: InboundMail) -> bool:
        """A bounce goes only to a sender who provably wrote (a forged From would make us
        mail an innocent address), never to automatic mail, and at a bounded rate."""
        if self.mailer is None or mail.sender is None or is_automatic(mail):
            return False
        if not mail.auth.may_act:
            log.info("no bounce to %s: the sender is not authenticated", mail.sender)
            return False
        if not await self._within(f"bounce:{mail.sender}", self.bounce_rate, mail.message_id):
            log.info("no bounce to %s: bounce rate reached", mail.sender)
            return False
        return True

    @staticmethod
    def _sender_text(mail: InboundMail) -> str:
        if mail.sender is None:
            return "(unknown sender)"
        if mail.sender_name:
            return f"{mail.sender_name} <{mail.sender.value}>"
        return mail.sender.value

    @staticmethod
    def _entry(mail: InboundMail, cid: str, eid: str, refs: list[ChatRef]) -> HistoryEntry:
        meta = {"message_id": mail.message_id, "posted": " ".join(
            f"{r.network}:{r.room}:{r.message}" for r in refs),
            "sender_auth": mail.auth.trust.value, "sender_checks": mail.auth.summary}
        if mail.quoted:
            meta["quoted"] = kept_text(mail.quoted)
        if mail.references:
            meta["references"] = " ".join(mail.references)
        # As written (what a reply to all answers), not where the servers delivered it.
        if mail.to:
            meta["to"] = " ".join(a.value for a in mail.to[:SHOWN_RECIPIENTS])
        if mail.cc:
            meta["cc"] = " ".join(a.value for a in mail.cc[:SHOWN_RECIPIENTS])
        sender = mail.sender or Address.email("unknown@switchboard.invalid")
        return HistoryEntry(
            id=eid, conversation_id=cid, kind=EntryKind.EMAIL, sender=sender,
            # A Date in the future is the sender's claim; the entry is dated on arrival.
            recipients=mail.recipients, at=min(mail.date, time.time()),
            text=kept_text(mail.body),
            subject=mail.subject,
            attachments=tuple(AttachmentRef(a.filename, a.content_type, a.size)
                              for a in mail.attachments),
            meta=meta)


HISTORY_TEXT_LIMIT = 64 * 1024  # characters of a body kept in history
SHOWN_RECIPIENTS = 50  # of an email's To, and of its Cc, kept and shown


def kept_text(text: str) -> str:
    """What history keeps of a body: all of it, up to a bound (what one email can cost in
    memory); past it, the start and a note (the whole text stays in the mailbox)."""
    if len(text) <= HISTORY_TEXT_LIMIT:
        return text
    return (text[:HISTORY_TEXT_LIMIT] + f"\n\n[… {len(text) - HISTORY_TEXT_LIMIT:,} more "
            "characters are not kept in history; the whole email is in the mailbox]")


CARD_RECIPIENTS = 10  # of To, and of Cc, named on a card; the rest are counted


def _shown(addresses: Sequence[Address]) -> tuple[str, ...]:
    shown = tuple(a.value for a in addresses[:CARD_RECIPIENTS])
    more = len(addresses) - len(shown)
    return (*shown, f"and {more} more") if more > 0 else shown


def _target_of(key: str, ref: ChatRef) -> ChatTarget:
    if key.startswith("dm:"):
        return ChatTarget.dm(Address.parse(key[len("dm:"):]))
    return ChatTarget(ref.network, room=ref.room)
