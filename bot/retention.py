"""Retention and erasure as the operator runs them: history past its age removed in
bounded batches, and a person forgotten on request (recorded as done, not as what)."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from bot.audit import AuditAction, AuditEvent, AuditLog
from bot.model import Address
from bot.stores import AddressBook, Erased, Erasure

log = logging.getLogger(__name__)

BATCH = 500  # entries removed in one step (one round trip to read, one to remove)
DAY = 86400


async def expire_history(erasure: Erasure, days: int, now: float | None = None,
                         batch: int = BATCH) -> int:
    """Remove every history entry older than ``days``, a batch at a time (other work goes
    on between batches); how many went."""
    before = (time.time() if now is None else now) - days * DAY
    total = 0
    while True:
        removed = await erasure.expire_history(before, batch)
        total += removed
        if removed < batch:
            return total
        await asyncio.sleep(0)


@dataclass(frozen=True)
class Forgotten:
    addresses: int  # address-book entries removed (the person's linked addresses)
    erased: Erased
    people: tuple[Address, ...] = ()  # every address of the person that was erased


async def forget(person: Address, address_book: AddressBook, erasure: Erasure,
                 audit: AuditLog, by: str) -> Forgotten:
    """Erase a person: every address linked to ``person`` (their identity), their history
    entries, reply tokens and unfinished deliveries. The audit trail records that an
    erasure was done, when and by whom, under a keyed digest of the address (so a
    request can be confirmed as carried out), never the address or what was erased."""
    identity = await address_book.resolve(person)
    addresses = list(dict.fromkeys([person, *(identity.addresses() if identity else [])]))
    unlinked = 0
    for address in addresses:
        unlinked += await address_book.unlink(address)
    # Last: it sweeps every trace left, the address book's included.
    erased = await erasure.forget(addresses)
    digest = await erasure.receipt(person)
    await audit.record(AuditEvent(AuditAction.ERASED, by, f"person receipt:{digest}",
                                  "history, address book, reply tokens and unfinished "
                                  "deliveries erased"))
    log.info("a person was erased (receipt:%s)", digest)
    return Forgotten(unlinked, erased, tuple(addresses))
