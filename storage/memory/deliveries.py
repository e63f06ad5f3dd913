"""In memory: deliveries, their changes and the claims on them."""

from __future__ import annotations

import time
from dataclasses import replace

from bot.errors import InvalidTransition, NotFound
from bot.model import (
    Address,
    Delivery,
    DeliveryState,
    ReplyContext,
    StateChange,
    sources_of,
)
from storage.memory.clock import Expiring


class MemoryDeliveries:
    def __init__(self) -> None:
        self.records: dict[str, Delivery] = {}
        self.claims: Expiring[str] = Expiring()

    async def create(self, delivery: Delivery) -> Delivery:
        if delivery.id not in self.records:
            first = StateChange(DeliveryState.PENDING, delivery.created_at, "created")
            self.records[delivery.id] = replace(delivery,
                                                state=DeliveryState.PENDING, changes=(first,))
        return self.records[delivery.id]

    async def get(self, delivery_id: str) -> Delivery | None:
        found = self.records.get(delivery_id)
        return found

    async def transition(self, delivery_id: str, to: DeliveryState, note: str = "",
                         *, count_attempt: bool = False,
                         context: ReplyContext | None = None) -> Delivery:
        current = self.records.get(delivery_id)
        if current is None:
            raise NotFound(f"there is no delivery {delivery_id}")
        if current.state not in sources_of(to):
            raise InvalidTransition(delivery_id, current.state.value, to.value)
        changed = replace(current, state=to,
                          changes=(*current.changes, StateChange(to, time.time(), note)),
                          attempts=current.attempts + (1 if count_attempt else 0),
                          context=context or current.context)
        self.records[delivery_id] = changed
        return changed

    async def claim(self, delivery_id: str, holder: str, ttl: float) -> bool:
        return self.claims.set_new(delivery_id, holder, ttl)

    async def extend(self, delivery_id: str, holder: str, ttl: float) -> bool:
        if self.claims.get(delivery_id) != holder:
            return False
        self.claims.expire(delivery_id, ttl)
        return True

    async def release(self, delivery_id: str) -> None:
        self.claims.delete(delivery_id)

    async def count_by_state(self) -> dict[DeliveryState, int]:
        counts = dict.fromkeys(DeliveryState, 0)
        for delivery in self.records.values():
            counts[delivery.state] += 1
        return counts

    async def in_state(self, state: DeliveryState, limit: int = 100) -> list[Delivery]:
        found = sorted((d for d in self.records.values() if d.state is state),
                       key=lambda d: (d.created_at, d.id))
        return found[:limit]

    async def from_sender(self, sender: Address, limit: int = 100) -> list[Delivery]:
        found = sorted((d for d in self.records.values() if d.sender == sender),
                       key=lambda d: (d.created_at, d.id), reverse=True)
        return found[:limit]
