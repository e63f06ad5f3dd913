"""Who may do what: use the bot, invite it, mail people outside the organisation, read
which history. Default-deny outside the configured organisation.

The permissions map names a level per Matrix user, Matrix homeserver, Slack user
(``TEAM/USER``), Slack workspace (``TEAM``), a whole network (``matrix``, ``slack``) or
everyone (``*``); the most specific entry wins.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from bot.audit import AuditEvent, AuditLog, record_or_log
from bot.metering import customer_of
from bot.model import Address, EntryKind, HistoryEntry, Network
from bot.stores import AddressBook, RateLimits

log = logging.getLogger(__name__)


class Level(enum.IntEnum):
    NONE = 0  # ignored by the bot: no commands, no invitations
    USER = 1  # may use the bot
    ADMIN = 2  # may also read all history and look anyone up


class OutsideMail(enum.StrEnum):
    """Who may start email to addresses outside the organisation's domains."""

    VERIFIED = "verified"  # users whose chat account is linked to a verified email address
    USERS = "users"  # every user
    ADMINS = "admins"  # admins only


class ThreadReplies(enum.StrEnum):
    """What a plain message in the chat thread of an email does."""

    INTERNAL = "internal"  # stays in chat: colleagues discuss; `email <text>` answers
    EMAIL = "email"  # is sent to the email's sender as the answer


def parse_levels(text: str) -> dict[str, Level]:
    """``key=level`` pairs, comma-separated; ValueError naming what is wrong."""
    levels: dict[str, Level] = {}
    for item in (i.strip() for i in text.split(",") if i.strip()):
        key, sep, value = item.rpartition("=")
        try:
            level = Level[value.strip().upper()]
        except KeyError:
            raise ValueError(f"{item!r}: the level must be none, user or admin") from None
        if not sep or not key.strip():
            raise ValueError(f"{item!r} is not who=level (like example.org=user)")
        levels[key.strip().lower()] = level
    return levels


@dataclass(frozen=True)
class PermissionRules:
    levels: Mapping[str, Level]  # see the module's docstring; keys lowercased
    org_domains: frozenset[str]  # mail to these domains is inside the organisation
    outside_mail: OutsideMail = OutsideMail.VERIFIED
    user_mail_rate: tuple[int, int] = (30, 3600)  # emails per chat user per window
    org_mail_rate: tuple[int, int] = (300, 3600)  # emails per organisation per window

    def level(self, user: Address) -> Level:
        for key in _keys_of(user):
            if key in self.levels:
                return self.levels[key]
        return Level.NONE

    def is_admin(self, user: Address) -> bool:
        return self.level(user) >= Level.ADMIN

    def is_outsider(self, email: Address) -> bool:
        domain = email.value.rpartition("@")[2]
        return not any(domain == d or domain.endswith("." + d) for d in self.org_domains)


def _keys_of(user: Address) -> list[str]:
    value = user.value.lower()
    if user.network is Network.MATRIX:
        return [value, value.partition(":")[2], "matrix", "*"]
    if user.network is Network.SLACK:
        return [value, value.partition("/")[0], "slack", "*"]
    return ["*"]


@dataclass
class Permissions:
    """The rules, applied: each refusal is recorded in the audit trail and explained."""

    rules: PermissionRules
    address_book: AddressBook
    rates: RateLimits | None = None
    audit: AuditLog | None = None

    def is_admin(self, user: Address) -> bool:
        return self.rules.is_admin(user)

    async def may_use(self, user: Address, action: str) -> str | None:
        """None when ``user`` may use the bot, else why not."""
        if self.rules.level(user) >= Level.USER:
            return None
        return await self.refuse(user, action, f"{user.value} is not allowed to use "
                                 "Switchboard here; ask an administrator to add you")

    async def may_invite(self, user: Address, room: str) -> bool:
        if self.rules.level(user) >= Level.USER:
            return True
        if self.audit is not None:
            await self._record(AuditEvent.invite_refused(user, room))
        return False

    async def may_mail(self, sender: Address, to: Address, answering: HistoryEntry | None,
                       event: str, *, own_address: bool = False,
                       copies: Sequence[Address] = ()) -> str | None:
        """None when ``sender`` may send this email now, else why not. Answering an email
        its sender wrote is always allowed to users, and so is a code to an address the
        sender says is their own (``own_address``); starting mail to an outsider follows
        the outside-mail rule; every email counts against the user's and the
        organisation's rate."""
        what = f"email to {to.value}"
        refusal = await self.may_use(sender, what)
        if refusal is not None:
            return refusal
        # Answering an email reaches its sender and, with a reply to all, the people it
        # was written to: they are in the conversation already.
        present = {answering.sender.value, *answering.meta.get("to", "").split(),
                   *answering.meta.get("cc", "").split()} \
            if answering is not None and answering.kind is EntryKind.EMAIL else set()
        for person in (to, *copies):
            answers = (own_address and person is to) or person.value in present
            if self.rules.is_outsider(person) and not answers:
                reason = await self._outside_refusal(sender, person)
                if reason is not None:
                    return await self.refuse(sender, f"email to {person.value}", reason)
        if self.rates is not None:
            limit, window = self.rules.user_mail_rate
            if not await self.rates.hit(f"mail:user:{sender}", limit, window, event):
                return await self.refuse(sender, what, f"you have sent {limit} emails in the "
                                         f"last {window // 60} minutes, the most allowed; "
                                         "try again later")
            org = customer_of(sender) or str(sender)
            limit, window = self.rules.org_mail_rate
            if not await self.rates.hit(f"mail:org:{org}", limit, window, event):
                return await self.refuse(sender, what, f"your organisation has sent {limit} "
                                         f"emails in the last {window // 60} minutes, the "
                                         "most allowed; try again later")
        return None

    async def _outside_refusal(self, sender: Address, to: Address) -> str | None:
        rule = self.rules.outside_mail
        if self.is_admin(sender) or rule is OutsideMail.USERS:
            return None
        if rule is OutsideMail.ADMINS:
            return (f"{to.value} is outside the organisation, and only administrators may "
                    "start email to outside addresses")
        identity = await self.address_book.resolve(sender)
        if identity is not None and any(m.verified and m.address.network is Network.EMAIL
                                        for m in identity.mappings):
            return None
        return (f"{to.value} is outside the organisation; to start email to outside "
                "addresses, first link your own email address with `link <your email>`")

    async def refuse(self, user: Address, what: str, reason: str) -> str:
        log.info("refused %s for %s: %s", what, user, reason)
        await self._record(AuditEvent.refused(user, what, reason))
        return reason

    async def _record(self, event: AuditEvent) -> None:
        await record_or_log(self.audit, event)
