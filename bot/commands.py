"""The platform-neutral command set behind Slack's `/switchboard …` and Matrix's `!sb …`.

A bridge parses nothing: it hands the text and where it was typed to ``Commands.run``
and shows the Notice it gets back. Every refusal says what was wrong and what to do.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from email.message import EmailMessage

from bot.errors import AddressTaken, BridgeError
from bot.flows.outcomes import CannotReply, choices_for, notice_for
from bot.flows.outgoing import MARKER, marker
from bot.flows.reply_by_email import ReplyByEmail
from bot.flows.reply_in_chat import ReplyInChat
from bot.metering import Charges, Meter, Service, Usage, customer_of
from bot.model import (
    Address,
    AddressError,
    ChatRef,
    DeliveryState,
    HistoryEntry,
    HistoryPage,
    Network,
    Provenance,
)
from bot.permissions import Permissions, ThreadReplies
from bot.ports import Choice, MailSender, Notice
from bot.render import render
from bot.room_commands import RoomCommands, Where
from bot.search import Search
from bot.stores import AddressBook, Conversations, Deliveries, History, Verifications
from bot.text import unlinked

log = logging.getLogger(__name__)
CODE_TTL = 15 * 60
HISTORY_PAGE = 10
SCOPE_DEPTH = 2000  # conversations (and history entries) looked through to decide scope
SCAN_PAGE = 100
_SLACK_MENTION = re.compile(r"^<@([UW][A-Z0-9]+)(?:\|[^>]*)?>$")


@dataclass(frozen=True)
class CommandContext:
    user: Address
    user_name: str
    where: ChatRef | None  # the room and thread the command was typed in
    shows: tuple[str, str] | None  # (conversation, entry) the thread is about, if any
    request: str  # unique per command event: a redelivered event is not run twice
    room: str | None = None  # the channel or room typed in (None: a direct chat, or unknown)


# The current period's usage of a customer, and its charges so far if there is a rate card.
UsageView = Callable[[str], Awaitable[tuple[Usage, Charges | None]]]


class CommandError(Exception):
    """Input a person can correct; the message says how."""


@dataclass
class Commands:
    replies: ReplyInChat
    emails: ReplyByEmail
    address_book: AddressBook
    history: History
    deliveries: Deliveries
    verifications: Verifications
    mailer: MailSender | None
    bot_email: str
    retry_interval: float
    meter: Meter = field(default_factory=Meter)
    usage: UsageView | None = None
    permissions: Permissions | None = None  # None: everyone may everything (unit tests)
    conversations: Conversations | None = None  # where conversations were posted (scoping)
    # What a plain message in an email's thread does, by room (None: the default rule).
    thread_replies: Callable[[ChatRef], ThreadReplies] | None = None
    rooms: RoomCommands | None = None  # routes, status, held mail (admins)
    search: Search | None = None  # `search`: everything said, as the asker may read it

    async def run_plain(self, text: str, ctx: CommandContext) -> Notice | None:
        """A plain message in the thread of a post: the answer by email when the room's
        rule says so, else nothing (colleagues talking stays in chat)."""
        if ctx.shows is None or ctx.where is None:
            return None
        rule = self.thread_replies(ctx.where) if self.thread_replies else ThreadReplies.EMAIL
        if rule is not ThreadReplies.EMAIL:
            return None
        return await self.run(f"email {text}", ctx)

    async def run(self, text: str, ctx: CommandContext) -> Notice:
        measure = self.meter.start()
        notice = await self._run(text, ctx)
        verb = text.strip().partition(" ")[0].lower() or "help"
        await self.meter.finish(measure, Service.COMMAND, customer_of(ctx.user),
                                bytes_in=len(text.encode()),
                                bytes_out=len(notice.text.encode()), verb=verb[:20])
        return notice

    async def _run(self, text: str, ctx: CommandContext) -> Notice:
        verb, _, rest = text.strip().partition(" ")
        verb, rest = verb.lower(), rest.strip()
        handler = {
            "im": self._im, "email": self._email, "reply-all": self._reply_all,
            "replyall": self._reply_all, "forward": self._forward,
            "link": self._link, "unlink": self._unlink,
            "whois": self._whois, "history": self._history, "pending": self._pending,
            "queue": self._choice, "cancel": self._choice, "sendmail": self._choice,
            "usage": self._usage, "route": self._rooms, "status": self._rooms,
            "post": self._rooms, "discard": self._rooms, "allow": self._rooms,
            "block": self._block, "unblock": self._block, "search": self._search,
        }.get(verb)
        if self.permissions is not None:
            refused = await self.permissions.may_use(ctx.user, f"command {verb or 'help'}")
            if refused is not None:
                return Notice(f"Not allowed: {refused}.")
        if verb in ("", "help"):
            return Notice(render("chat/help.txt.j2"))
        if handler is None:
            return Notice(f"Unknown command {verb!r}.\n" + render("chat/help.txt.j2"))
        try:
            return await handler(verb, rest, ctx)
        except CommandError as exc:
            return Notice(str(exc))

    async def _rooms(self, verb: str, rest: str, ctx: CommandContext) -> Notice:
        if self.rooms is None:
            raise CommandError(f"`{verb}` is not available here.")
        return await self.rooms.run(verb, rest, Where(ctx.user, ctx.user.network, ctx.room))

    async def _block(self, verb: str, rest: str, ctx: CommandContext) -> Notice:
        """`block` in an email's thread blocks its (latest) sender, `block domain` their
        domain; elsewhere it takes the address or domain, as the room's admins type it."""
        words = rest.split()
        if ctx.shows is not None and verb == "block" and (
                not words or words[0].lower() in ("sender", "domain")):
            answered = await self.emails.answered(*ctx.shows, latest=True)
            if answered is None or answered.sender.network is not Network.EMAIL:
                raise CommandError("this thread's message did not come by email; "
                                   "`block <address|@domain>` blocks one")
            domain = bool(words) and words[0].lower() == "domain"
            who = "@" + answered.sender.value.rpartition("@")[2] if domain \
                else answered.sender.value
            rest = " ".join([who, *words[1:]])
        return await self._rooms(verb, rest, ctx)

    async def _search(self, verb: str, rest: str, ctx: CommandContext) -> Notice:
        if self.search is None:
            raise CommandError("Search is not available here.")
        return await self.search.run(ctx.user, rest)

    async def _usage(self, verb: str, rest: str, ctx: CommandContext) -> Notice:
        customer = customer_of(ctx.user)
        if customer is None or self.usage is None:
            raise CommandError("Usage is not metered here.")
        usage, charges = await self.usage(customer)
        return Notice(render("chat/usage.txt.j2", usage=usage, charges=charges))

    # --- reading what people type ---------------------------------------------------

    def _address(self, text: str, ctx: CommandContext) -> Address:
        text = text.strip()
        mention = _SLACK_MENTION.match(text)
        if mention and ctx.user.network is Network.SLACK:
            return Address.slack(ctx.user.value.partition("/")[0], mention.group(1))
        try:
            return Address.parse(unlinked(text))
        except AddressError as exc:
            raise CommandError(f"{exc}. Give an email address, a Matrix id (@name:server) "
                               "or a Slack mention.") from None

    def _email_address(self, text: str, ctx: CommandContext) -> Address:
        address = self._address(text, ctx)
        if address.network is not Network.EMAIL:
            raise CommandError(f"{text!r} is not an email address")
        return address

    # --- reply and message ----------------------------------------------------------

    async def _im(self, verb: str, rest: str, ctx: CommandContext) -> Notice:
        first, _, text = rest.partition(" ")
        if ctx.shows is not None and not _looks_like_address(first):
            if not rest:
                raise CommandError("`im` needs the text of your reply, like `im Thanks!`")
            cid, eid = ctx.shows
            outcome = await self.replies.start(
                replier=ctx.user, replier_name=ctx.user_name, conversation_id=cid,
                entry_id=eid, text=rest, request=ctx.request, where=ctx.where)
            return notice_for(outcome, self.retry_interval)
        if not first or not text.strip():
            raise CommandError("`im <email> <text>` messages someone by their email address, "
                               "on whichever network they are; in an email's thread, "
                               "`im <text>` answers it.")
        to = self._email_address(first, ctx)
        cid = "i" + hashlib.sha256(ctx.request.encode()).hexdigest()[:24]
        outcome = await self.replies.start(
            replier=ctx.user, replier_name=ctx.user_name, conversation_id=cid, entry_id="",
            text=text, request=ctx.request, where=ctx.where, to_email=to)
        return notice_for(outcome, self.retry_interval)

    async def _email(self, verb: str, rest: str, ctx: CommandContext) -> Notice:
        first, _, text = rest.partition(" ")
        if _looks_like_address(first):
            to = self._email_address(first, ctx)
            if not text.strip():
                raise CommandError("`email <address> <text>` needs the text to send")
            return notice_for(await self.emails.start_new(
                sender=ctx.user, sender_name=ctx.user_name, to=to, text=text,
                request=ctx.request))
        if ctx.shows is None:
            raise CommandError("`email <address> <text>` starts an email thread; in the "
                               "thread of a message Switchboard posted, `email <text>` "
                               "answers it by email.")
        if not rest:
            raise CommandError("`email` needs the text to send, like `email Thanks, will do`")
        cid, eid = ctx.shows
        return notice_for(await self.emails.start(
            replier=ctx.user, replier_name=ctx.user_name, conversation_id=cid, entry_id=eid,
            text=rest, request=ctx.request, latest=True))

    async def _reply_all(self, verb: str, rest: str, ctx: CommandContext) -> Notice:
        if ctx.shows is None:
            raise CommandError("`reply-all <text>` answers an email and everyone it was "
                               "written to; type it in the email's thread.")
        cid, eid = ctx.shows
        if not rest:
            # Who it would reach, before anything is sent.
            answered = await self.emails.answered(cid, eid, latest=True)
            if answered is None:
                raise CommandError("that thread's email is not one Switchboard knows")
            chosen = await self.emails.recipients(ctx.user, answered, reply_all=True)
            if isinstance(chosen, CannotReply):
                return notice_for(chosen)
            return Notice(f"`reply-all <text>` would go to {chosen.to.value}"
                          + (f", copied to {', '.join(a.value for a in chosen.cc)}"
                             if chosen.cc else " (nobody else was on it)") + ".")
        return notice_for(await self.emails.start(
            replier=ctx.user, replier_name=ctx.user_name, conversation_id=cid, entry_id=eid,
            text=rest, request=ctx.request, reply_all=True, latest=True))

    async def _forward(self, verb: str, rest: str, ctx: CommandContext) -> Notice:
        first, _, note = rest.partition(" ")
        if ctx.shows is None or not _looks_like_address(first):
            raise CommandError("`forward <address> [note]`, in an email's thread, forwards "
                               "the email to that address with your note above it.")
        to = self._email_address(first, ctx)
        cid, eid = ctx.shows
        return notice_for(await self.emails.forward(
            replier=ctx.user, replier_name=ctx.user_name, conversation_id=cid, entry_id=eid,
            to=to, note=note, request=ctx.request, latest=True))

    async def _choice(self, verb: str, rest: str, ctx: CommandContext) -> Notice:
        if not rest:
            raise CommandError(f"`{verb}` needs the delivery id it was offered with, like "
                               f"`{verb} d1234…` (see `pending`)")
        outcome = await self.replies.choose(rest.split()[0], verb, ctx.user)
        return notice_for(outcome, self.retry_interval)

    # --- the address book -----------------------------------------------------------

    async def _link(self, verb: str, rest: str, ctx: CommandContext) -> Notice:
        word, _, code = rest.partition(" ")
        if word.lower() == "verify":
            return await self._verify(code.strip(), ctx)
        if not rest:
            raise CommandError("`link <email>` links your email address to your chat account "
                               "(a code is emailed to you); then `link verify <code>`.")
        email = self._email_address(rest, ctx)
        owner = await self.address_book.resolve(email)
        if owner is not None and ctx.user not in owner.addresses():
            raise CommandError(f"{email.value} is already linked to someone else; if it is "
                               "yours, ask an administrator to move it")
        if self.mailer is None:
            raise CommandError("Switchboard cannot send email here (no SMTP server "
                               "configured), so it cannot verify addresses")
        if self.permissions is not None:
            # A code mails any address someone types: it counts against their mail rate.
            refused = await self.permissions.may_mail(ctx.user, email, None, ctx.request,
                                                      own_address=True)
            if refused is not None:
                raise CommandError(f"Not allowed: {refused}.")
        code = await self.verifications.issue(ctx.user, email, CODE_TTL)
        try:
            await self.mailer.send(_code_email(self.bot_email, email, ctx, code))
        except BridgeError as exc:
            raise CommandError(f"the code could not be emailed to {email.value} ({exc}); "
                               "try again later") from None
        return Notice(f"A 6-digit code was emailed to {email.value}. Type `link verify "
                      f"<code>` within {CODE_TTL // 60} minutes.")

    async def _verify(self, code: str, ctx: CommandContext) -> Notice:
        if not code:
            raise CommandError("`link verify <code>` needs the code from the email")
        result = await self.verifications.check(ctx.user, code)
        if isinstance(result, str):
            raise CommandError(f"Not linked: {result}.")
        try:
            if await self.address_book.resolve(ctx.user) is None:
                await self.address_book.link(ctx.user, provenance=Provenance.SELF_LINKED,
                                             verified=True)
            await self.address_book.link(result, provenance=Provenance.SELF_LINKED,
                                         verified=True, to=ctx.user)
        except AddressTaken:
            raise CommandError(f"Not linked: {result.value} is already linked to someone "
                               "else.") from None
        return Notice(f"Linked: {result.value} is now verified as yours. Email to it can "
                      "reach you here.")

    async def _unlink(self, verb: str, rest: str, ctx: CommandContext) -> Notice:
        if not rest:
            raise CommandError("`unlink <email>` removes one of your email addresses")
        email = self._email_address(rest, ctx)
        owner = await self.address_book.resolve(email)
        if owner is None or ctx.user not in owner.addresses():
            raise CommandError(f"{email.value} is not linked to you, so there is nothing to "
                               "unlink")
        await self.address_book.unlink(email)
        return Notice(f"Unlinked {email.value}.")

    async def _whois(self, verb: str, rest: str, ctx: CommandContext) -> Notice:
        if not rest:
            raise CommandError("`whois <email|chat user>` shows what Switchboard knows of "
                               "someone")
        address = self._address(rest, ctx)
        identity = await self.address_book.resolve(address)
        if identity is None:
            return Notice(f"Switchboard knows nothing of {address.value}.")
        if not await self._may_look_up(ctx.user, identity.addresses()):
            raise CommandError(await self._refuse(
                ctx.user, f"whois {address.value}", "you can look up yourself and people "
                "you have exchanged messages with; an administrator can look up anyone"))
        lines = [f"{address.value} is known as:"]
        for m in identity.mappings:
            lines.append(f"  {m.address.network.value}: {m.address.value} ({m.provenance.value}"
                         f"{', verified' if m.verified else ', not verified'})")
        return Notice("\n".join(lines))

    async def _history(self, verb: str, rest: str, ctx: CommandContext) -> Notice:
        who, _, page_text = rest.partition(" ")
        if not who:
            raise CommandError("`history <email|chat user> [page]` shows the latest exchanges "
                               "with someone")
        try:
            page = max(1, int(page_text or "1"))
        except ValueError:
            raise CommandError(f"{page_text!r} is not a page number") from None
        address = self._address(who, ctx)
        identity = await self.address_book.resolve(address)
        addresses = identity.addresses() if identity else [address]
        found = await self._visible_history(ctx.user, addresses, page - 1)
        if not found.entries:
            return Notice(f"No history with {address.value}" +
                          (f" on page {page}." if page > 1 else "."))
        lines = [f"History with {address.value}, page {page} (newest first):"]
        for e in found.entries:
            when = time.strftime("%Y-%m-%d %H:%M", time.gmtime(e.at))
            text = " ".join(e.text.split())[:120]
            lines.append(f"  {when} {e.kind.value} from {e.sender.value}"
                         f"{': ' + e.subject if e.subject else ''} — {text}")
        if found.has_more:
            lines.append(f"More: `history {who} {page + 1}`")
        return Notice("\n".join(lines))

    # --- who may read what ------------------------------------------------------------

    async def _own_addresses(self, user: Address) -> list[Address]:
        identity = await self.address_book.resolve(user)
        return identity.addresses() if identity else [user]

    async def _may_look_up(self, asker: Address, addresses: Sequence[Address]) -> bool:
        if self.permissions is None or self.permissions.is_admin(asker):
            return True
        own = await self._own_addresses(asker)
        if asker in addresses or set(own) & set(addresses):
            return True
        mine = await self.history.conversations_of(own, SCOPE_DEPTH)
        theirs = await self.history.conversations_of(list(addresses), SCOPE_DEPTH)
        return bool(mine & theirs)

    async def _visible_history(self, asker: Address, addresses: Sequence[Address],
                               page: int) -> HistoryPage:
        """A page of someone's history as ``asker`` may see it: the conversations the
        asker took part in, or that were posted where the asker is a member; all of it
        for an administrator."""
        if self.permissions is None or self.permissions.is_admin(asker):
            return await self.history.person(addresses, page, HISTORY_PAGE)
        mine = await self.history.conversations_of(await self._own_addresses(asker),
                                                   SCOPE_DEPTH)
        seen: dict[str, bool] = {}
        rooms: dict[str, bool] = {}  # membership asked once per room, not per conversation
        shown: list[HistoryEntry] = []
        wanted = (page + 1) * HISTORY_PAGE + 1
        scanned = 0
        while len(shown) < wanted and scanned < SCOPE_DEPTH:
            batch = await self.history.person(addresses, scanned // SCAN_PAGE, SCAN_PAGE)
            for entry in batch.entries:
                cid = entry.conversation_id
                if cid not in seen:
                    seen[cid] = cid in mine or await self._member_where_posted(asker, cid,
                                                                                 rooms)
                if seen[cid]:
                    shown.append(entry)
            scanned += SCAN_PAGE
            if not batch.has_more:
                break
        window = shown[page * HISTORY_PAGE:]
        return HistoryPage(tuple(window[:HISTORY_PAGE]), page, HISTORY_PAGE,
                           has_more=len(window) > HISTORY_PAGE)

    async def _member_where_posted(self, user: Address, conversation_id: str,
                                   rooms: dict[str, bool]) -> bool:
        if self.conversations is None:
            return False
        network = self.replies.networks.get(user.network)
        if network is None:
            return False
        for ref in (await self.conversations.threads(conversation_id)).values():
            if ref.network is not user.network:
                continue
            if ref.room not in rooms:
                try:
                    rooms[ref.room] = await network.is_member(ref.room, user)
                except BridgeError as exc:  # cannot tell: not shown (default-deny)
                    log.warning("membership of %s in %s unknown: %s", user, ref.room, exc)
                    rooms[ref.room] = False
            if rooms[ref.room]:
                return True
        return False

    async def _refuse(self, user: Address, what: str, reason: str) -> str:
        if self.permissions is not None:
            await self.permissions.refuse(user, what, reason)
        return f"Not allowed: {reason}."

    async def _pending(self, verb: str, rest: str, ctx: CommandContext) -> Notice:
        mine = [d for d in await self.deliveries.from_sender(ctx.user, 200)
                if d.state in (DeliveryState.QUEUED, DeliveryState.FAILED)]
        if not mine:
            return Notice("You have no queued or failed deliveries.")
        lines = ["Your deliveries waiting or failed:"]
        choices: list[Choice] = []
        for d in mine[:10]:
            note = d.changes[-1].note if d.changes else ""
            lines.append(f"  {d.id} to {d.person}: "
                         f"{d.state.value} — {note} ({d.attempts} attempts)")
            choices += [c for c in choices_for(d.id) if c.action != "sendmail"]
        lines.append("Retry with `queue <id>`, drop with `cancel <id>`, or `sendmail <id>`.")
        return Notice("\n".join(lines), tuple(choices[:20]))


def _looks_like_address(word: str) -> bool:
    return "@" in word or word.startswith("<mailto:")


def _code_email(bot_email: str, to: Address, ctx: CommandContext, code: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = Address.email(bot_email).header_form("Switchboard")
    msg["To"] = to.header_form()
    msg["Subject"] = "Your Switchboard verification code"
    msg["Auto-Submitted"] = "auto-generated"
    msg[MARKER] = marker("verification", bot_email)
    msg.set_content(render("mail/verify.txt.j2", code=code, user=ctx.user.value,
                           network=ctx.user.network.value.title(), minutes=CODE_TTL // 60))
    return msg
