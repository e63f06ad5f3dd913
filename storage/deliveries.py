"""Delivery records on Redis: the current state in a hash, every change in a list."""

from __future__ import annotations

import time

from bot.errors import InvalidTransition, NotFound
from bot.model import (
    Address,
    Delivery,
    DeliveryState,
    ReplyContext,
    StateChange,
    sources_of,
)
from storage.codec import delivery_fields, dump_change, dump_context, load_delivery
from storage.connection import RedisBacked, text

# KEYS: delivery hash, log, state index of the new state, sender index.
# ARGV: created-at score, first log record, id, then field/value pairs.
_CREATE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
for i = 4, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
redis.call('RPUSH', KEYS[2], ARGV[2])
redis.call('ZADD', KEYS[3], ARGV[1], ARGV[3])
redis.call('ZADD', KEYS[4], ARGV[1], ARGV[3])
return 1
"""

# KEYS: delivery hash, log, index of the new state. ARGV: new state, log record,
# count attempt (0/1), id, state-index prefix, new context or "", then the allowed source
# states. The compare and the set happen in one step: two workers cannot both deliver.
_TRANSITION = """
local current = redis.call('HGET', KEYS[1], 'state')
if not current then return {'missing', ''} end
local allowed = false
for i = 7, #ARGV do if ARGV[i] == current then allowed = true end end
if not allowed then return {'refused', current} end
redis.call('HSET', KEYS[1], 'state', ARGV[1])
if ARGV[6] ~= '' then redis.call('HSET', KEYS[1], 'meta', ARGV[6]) end
if ARGV[3] == '1' then redis.call('HINCRBY', KEYS[1], 'attempts', 1) end
redis.call('RPUSH', KEYS[2], ARGV[2])
local created = redis.call('HGET', KEYS[1], 'created')
redis.call('ZREM', ARGV[5] .. current, ARGV[4])
redis.call('ZADD', KEYS[3], created, ARGV[4])
return {'ok', current}
"""


# KEYS: claim. ARGV: holder, ttl ms. Extend only a claim its holder still has.
_EXTEND = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""


class RedisDeliveries(RedisBacked):
    async def create(self, delivery: Delivery) -> Delivery:
        first = StateChange(DeliveryState.PENDING, delivery.created_at, "created")
        fields = delivery_fields(delivery) | {"state": DeliveryState.PENDING.value}
        pairs = [x for kv in fields.items() for x in kv]
        async with self._translated(f"creating delivery {delivery.id}"):
            await self.redis.eval(
                _CREATE, 4, self.keys.delivery(delivery.id), self.keys.delivery_log(delivery.id),
                self.keys.deliveries_in_state(DeliveryState.PENDING.value),
                self.keys.deliveries_by_sender(str(delivery.sender)),
                repr(delivery.created_at), dump_change(first), delivery.id, *pairs)
            stored = await self._load(delivery.id)
        # A reply the replier was told of: kept through a failover (and each change of
        # its state, below: a lost "delivered" would deliver it again).
        await self._durable(f"creating delivery {delivery.id}")
        assert stored is not None
        return stored

    async def get(self, delivery_id: str) -> Delivery | None:
        async with self._translated(f"reading delivery {delivery_id}"):
            return await self._load(delivery_id)

    async def _load(self, delivery_id: str) -> Delivery | None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hgetall(self.keys.delivery(delivery_id))
            pipe.lrange(self.keys.delivery_log(delivery_id), 0, -1)
            fields, log = await pipe.execute()
        return load_delivery(fields, log) if fields else None

    async def transition(self, delivery_id: str, to: DeliveryState, note: str = "",
                         *, count_attempt: bool = False,
                         context: ReplyContext | None = None) -> Delivery:
        change = StateChange(to, time.time(), note)
        state_prefix = self.keys.deliveries_in_state("")
        async with self._translated(f"updating delivery {delivery_id}"):
            status, current = await self.redis.eval(
                _TRANSITION, 3, self.keys.delivery(delivery_id),
                self.keys.delivery_log(delivery_id), self.keys.deliveries_in_state(to.value),
                to.value, dump_change(change), "1" if count_attempt else "0", delivery_id,
                state_prefix, dump_context(context) if context is not None else "",
                *sorted(s.value for s in sources_of(to)))
            if status == "missing":
                raise NotFound(f"there is no delivery {delivery_id}")
            if status == "refused":
                raise InvalidTransition(delivery_id, current, to.value)
            stored = await self._load(delivery_id)
        await self._durable(f"updating delivery {delivery_id}")
        assert stored is not None
        return stored

    async def claim(self, delivery_id: str, holder: str, ttl: float) -> bool:
        """Take the right to send this delivery for ``ttl`` seconds; False if taken."""
        async with self._translated(f"claiming delivery {delivery_id}"):
            return bool(await self.redis.set(self.keys.claim(delivery_id), holder, nx=True,
                                             px=int(ttl * 1000)))

    async def extend(self, delivery_id: str, holder: str, ttl: float) -> bool:
        """Keep holding the claim ``holder`` took for ``ttl`` more seconds; False if it
        is no longer ``holder``'s."""
        async with self._translated(f"extending the claim on delivery {delivery_id}"):
            return bool(await self.redis.eval(_EXTEND, 1, self.keys.claim(delivery_id), holder,
                                              int(ttl * 1000)))

    async def release(self, delivery_id: str) -> None:
        async with self._translated(f"releasing delivery {delivery_id}"):
            await self.redis.delete(self.keys.claim(delivery_id))

    async def count_by_state(self) -> dict[DeliveryState, int]:
        async with (self._translated("counting deliveries"),
                    self.redis.pipeline(transaction=False) as pipe):
            for state in DeliveryState:
                pipe.zcard(self.keys.deliveries_in_state(state.value))
            counts = await pipe.execute()
        return {state: int(n) for state, n in zip(DeliveryState, counts, strict=True)}

    async def in_state(self, state: DeliveryState, limit: int = 100) -> list[Delivery]:
        async with self._translated(f"listing {state} deliveries"):
            ids = await self.redis.zrange(self.keys.deliveries_in_state(state.value), 0, limit - 1)
            return [d for i in ids if (d := await self._load(text(i))) is not None]

    async def from_sender(self, sender: Address, limit: int = 100) -> list[Delivery]:
        async with self._translated(f"listing deliveries from {sender}"):
            ids = await self.redis.zrevrange(self.keys.deliveries_by_sender(str(sender)),
                                             0, limit - 1)
            return [d for i in ids if (d := await self._load(text(i))) is not None]
