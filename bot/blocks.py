"""Blocked senders and domains: their mail is neither posted nor bounced, only counted.

A block holds for one route (the address a room's admins block it on) or for the whole
deployment (``*``, for Switchboard's admins). Blocks live in the store; every process
keeps them in memory for the ingest path and follows the store's version of them, as
it follows the routes: a block made in one process holds in all of them within a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from bot.errors import StoreError
from bot.model import Address, AddressError

log = logging.getLogger(__name__)
EVERYWHERE = "*"  # the scope of a deployment-wide block
FOLLOW_INTERVAL = 1.0
MAX_BLOCKS = 10_000  # per scope: a bound on what every process keeps in memory


class BlockError(Exception):
    """A block that cannot be made or lifted; the message says why."""


@dataclass(frozen=True)
class Block:
    scope: str  # a route's address, or EVERYWHERE
    who: str  # an address, or "@domain"
    by: str = ""  # the chat address of who blocked it
    at: float = 0.0
    count: int = 0  # emails it stopped

    @property
    def is_domain(self) -> bool:
        return self.who.startswith("@")

    def describe(self) -> str:
        where = "everywhere" if self.scope == EVERYWHERE else f"on {self.scope}"
        return (f"{self.who if not self.is_domain else 'the domain ' + self.who[1:]} {where}: "
                f"{self.count} email{'s' if self.count != 1 else ''} stopped")


class BlockStore(Protocol):
    """The blocks, kept for every process, with the count of what each stopped."""

    async def version(self) -> int:
        """A number that changes whenever a block is made or lifted (not when counted)."""
        ...

    async def all(self) -> tuple[int, list[Block]]: ...

    async def add(self, block: Block) -> bool:
        """False when ``block.who`` was blocked on ``block.scope`` already."""
        ...

    async def remove(self, scope: str, who: str) -> bool: ...

    async def count(self, scope: str, who: str) -> None: ...


def blocked_form(text: str) -> str:
    """What someone typed (``spam@example.com``, ``@example.com``, ``example.com``) as a
    block is kept: an address, or ``@domain``."""
    text = text.strip().strip("<>").lower()
    if "@" in text and not text.startswith("@"):
        try:
            return Address.email(text).value
        except AddressError as exc:
            raise BlockError(f"{text!r} is not an email address: {exc}") from None
    domain = text.lstrip("@")
    try:
        return "@" + Address.email(f"x@{domain}").value.partition("@")[2]
    except AddressError:
        raise BlockError(f"{text!r} is neither an email address nor a domain") from None


class BlockList:
    """The blocks in effect, kept in memory and following the store."""

    def __init__(self, store: BlockStore | None = None) -> None:
        self.store = store
        self._version = -1
        self._blocks: dict[tuple[str, str], Block] = {}

    @property
    def empty(self) -> bool:
        """Whether nothing is blocked at all (the ingest path asks nothing more then)."""
        return not self._blocks

    def blocked(self, sender: Address | None, scopes: Iterable[str]) -> Block | None:
        """The block that stops ``sender``'s mail to any of ``scopes`` (route addresses;
        the deployment-wide blocks always count), or None."""
        if sender is None or not self._blocks:
            return None
        domain = "@" + sender.value.rpartition("@")[2]
        for scope in (EVERYWHERE, *scopes):
            for who in (sender.value, domain):
                found = self._blocks.get((scope, who))
                if found is not None:
                    return found
        # A subdomain's mail is its parent domain's too (mail.spam.example under @spam.example).
        parts = domain[1:].split(".")
        for i in range(1, len(parts) - 1):
            parent = "@" + ".".join(parts[i:])
            for scope in (EVERYWHERE, *scopes):
                found = self._blocks.get((scope, parent))
                if found is not None:
                    return found
        return None

    def in_scopes(self, scopes: Sequence[str]) -> list[Block]:
        return sorted((b for b in self._blocks.values() if b.scope in scopes),
                      key=lambda b: (b.scope != EVERYWHERE, b.scope, b.who))

    async def listed(self, scopes: Sequence[str]) -> list[Block]:
        """The blocks of ``scopes`` as the store has them now, with their counts."""
        if self.store is None:
            return []
        _, blocks = await self.store.all()
        return sorted((b for b in blocks if b.scope in scopes),
                      key=lambda b: (b.scope != EVERYWHERE, b.scope, b.who))

    async def stopped(self, block: Block) -> None:
        """Count one email ``block`` stopped (a count lost to an outage is only a count)."""
        if self.store is None:
            return
        try:
            await self.store.count(block.scope, block.who)
        except StoreError as exc:
            log.warning("could not count a blocked email: %s", exc)

    async def add(self, scope: str, who: str, by: Address, at: float) -> bool:
        """Block ``who`` on ``scope``; False when it was blocked there already."""
        if self.store is None:
            raise BlockError("blocks cannot be kept here (no store)")
        if len(self.in_scopes([scope])) >= MAX_BLOCKS:
            raise BlockError(f"{scope} has {MAX_BLOCKS} blocks, the most kept; lift some "
                             "with `unblock`")
        added = await self.store.add(Block(scope, who, by.value, at))
        await self.refresh(force=True)
        return added

    async def remove(self, scope: str, who: str) -> bool:
        if self.store is None:
            return False
        removed = await self.store.remove(scope, who)
        await self.refresh(force=True)
        return removed

    async def refresh(self, force: bool = False) -> bool:
        if self.store is None:
            return False
        if not force and await self.store.version() == self._version:
            return False
        version, blocks = await self.store.all()
        self._blocks = {(b.scope, b.who): b for b in blocks}
        self._version = version
        return True

    async def follow(self, stop: asyncio.Event) -> None:
        """Keep up with the store until ``stop``; an outage keeps the blocks last read."""
        while not stop.is_set():
            try:
                await self.refresh()
            except StoreError as exc:
                log.warning("could not read the blocks (the ones last read stay): %s", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), FOLLOW_INTERVAL)
