"""The store protocols of ``bot/stores.py`` kept in this process's memory.

For the flows' fast unit tests and for one-off programs: nothing survives the process,
and nothing is shared with another. The contract suite (tests/contract/) runs the same
tests against these and against Redis, so both keep the same promises.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from bot.stores import Stores
from storage.memory.accounts import MemoryCustomers, MemoryUsage
from storage.memory.arrivals import MemoryArrivals
from storage.memory.conversations import MemoryConversations, MemoryHistory
from storage.memory.deliveries import MemoryDeliveries
from storage.memory.operations import (
    MemoryAudit,
    MemoryIngest,
    MemoryMatrixState,
    MemoryRateLimits,
    MemoryWorkspaces,
)
from storage.memory.people import MemoryAddressBook, MemoryTokens, MemoryVerifications


class MemoryScheduler:
    """RetryScheduler: remembers what would run when (a test runs it by hand)."""

    def __init__(self) -> None:
        self.scheduled: list[tuple[str, int, float]] = []  # delivery id, attempt, delay

    async def schedule_retry(self, delivery_id: str, attempt: int, delay: float) -> None:
        if not any(s[:2] == (delivery_id, attempt) for s in self.scheduled):
            self.scheduled.append((delivery_id, attempt, delay))


@dataclass
class MemoryStore:
    address_book: MemoryAddressBook = field(default_factory=MemoryAddressBook)
    history: MemoryHistory = field(default_factory=MemoryHistory)
    deliveries: MemoryDeliveries = field(default_factory=MemoryDeliveries)
    conversations: MemoryConversations = field(default_factory=MemoryConversations)
    ingest: MemoryIngest = field(default_factory=MemoryIngest)
    matrix: MemoryMatrixState = field(default_factory=MemoryMatrixState)
    tokens: MemoryTokens = field(default_factory=MemoryTokens)
    verifications: MemoryVerifications = field(default_factory=MemoryVerifications)
    rates: MemoryRateLimits = field(default_factory=MemoryRateLimits)
    usage: MemoryUsage = field(default_factory=MemoryUsage)
    customers: MemoryCustomers = field(default_factory=MemoryCustomers)
    audit: MemoryAudit = field(default_factory=MemoryAudit)
    scheduler: MemoryScheduler = field(default_factory=MemoryScheduler)
    workspaces: MemoryWorkspaces = field(default_factory=MemoryWorkspaces)
    arrivals: MemoryArrivals = field(init=False)

    def __post_init__(self) -> None:
        self.arrivals = MemoryArrivals(self.conversations, self.history, self.rates,
                                       self.address_book, self.usage)

    async def close(self) -> None:
        pass


def _conforms(store: MemoryStore) -> Stores:
    return store  # the type checker holds each store here to its protocol
