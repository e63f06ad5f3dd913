"""Usage per customer in Redis: each transaction kept in a capped stream and added to
its day's and month's totals by one Lua script (HINCRBY), so concurrent workers never
lose an increment and a transaction's writes land together."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from bot.metering import (
    MEASURES,
    ChargeLine,
    Charges,
    Service,
    Transaction,
    Usage,
    day_of,
    month_of,
)
from storage.connection import Pipeline, RedisBacked, text
from storage.keys import Keys

TRANSACTIONS_KEPT = 100_000  # per customer; totals are kept for ever
_SERVICES = {s.value for s in Service}


# KEYS: day totals, month totals, the month's days, metered customers, the stream, the
# standing total held. ARGV: day, customer, stream cap, the transaction as JSON (its
# service and every measure: the amounts are read from it). One script: the totals, the
# indexes and the stream change together, and a burst of them costs one round trip when
# pipelined. The standing total is sampled into the day (``held``: what the day ended
# with) and the month (``held_start``: what it began with), for storage by GB-month.
_RECORD = """
local tx = cjson.decode(ARGV[4])
local before = tonumber(redis.call('GET', KEYS[6]) or '0')
local held = before
if tx.bytes_stored ~= 0 then
  held = redis.call('INCRBY', KEYS[6], string.format('%d', tx.bytes_stored))
end
redis.call('HSETNX', KEYS[2], 'held_start', before)
redis.call('HSET', KEYS[1], 'held', held)
for _, key in ipairs({KEYS[1], KEYS[2]}) do
  redis.call('HINCRBY', key, 'tx:' .. tx.service, 1)
  for _, measure in ipairs({MEASURES}) do
    if tx[measure] ~= 0 then
      redis.call('HINCRBY', key, measure, string.format('%d', tx[measure]))
    end
  end
end
redis.call('SADD', KEYS[3], ARGV[1])
redis.call('SADD', KEYS[4], ARGV[2])
redis.call('XADD', KEYS[5], 'MAXLEN', '~', ARGV[3], '*', 'tx', ARGV[4])
""".replace("{MEASURES}", "{" + ", ".join(f"'{m}'" for m in MEASURES) + "}")


def add_usage(pipe: Pipeline, keys: Keys, tx: Transaction) -> None:
    """One transaction's script, queued on ``pipe`` (with the other writes of its work)."""
    day, month = day_of(tx.at), month_of(tx.at)
    record = json.dumps({"service": tx.service.value, "at": tx.at,
                         "params": dict(tx.params), **{m: getattr(tx, m) for m in MEASURES}},
                        sort_keys=True)
    pipe.eval(_RECORD, 6, keys.usage(tx.customer, day), keys.usage(tx.customer, month),
              keys.usage_days(tx.customer, month), keys.metered_customers(),
              keys.transactions(tx.customer), keys.usage_held(tx.customer),
              day, tx.customer, TRANSACTIONS_KEPT, record)


class RedisUsage(RedisBacked):
    async def record_all(self, txs: list[Transaction]) -> None:
        """Several transactions in one round trip (each still atomic on its own)."""
        async with self._translated("recording usage"), \
                self.redis.pipeline(transaction=False) as pipe:
            for tx in txs:
                add_usage(pipe, self.keys, tx)
            await pipe.execute()

    async def usage(self, customer: str, period: str) -> Usage:
        async with self._translated(f"reading usage of {customer}"):
            raw = await self.redis.hgetall(self.keys.usage(customer, period))
        return _usage(customer, period, {text(k): int(v) for k, v in raw.items()})

    async def days(self, customer: str, month: str) -> list[Usage]:
        """Each day of ``month`` with usage, in order."""
        async with self._translated(f"reading daily usage of {customer}"):
            days = sorted(text(d) for d in await self.redis.smembers(
                self.keys.usage_days(customer, month)))
            async with self.redis.pipeline(transaction=False) as pipe:
                for day in days:  # one round trip for the month, not one per day
                    pipe.hgetall(self.keys.usage(customer, day))
                totals = await pipe.execute()
        return [_usage(customer, day, {text(k): int(v) for k, v in raw.items()})
                for day, raw in zip(days, totals, strict=True)]

    async def transactions(self, customer: str, count: int = 100) -> list[Transaction]:
        """The newest ``count`` transactions, newest first."""
        async with self._translated(f"reading transactions of {customer}"):
            found = await self.redis.xrevrange(self.keys.transactions(customer), count=count)
        return [_transaction(customer, json.loads(text((fields or {}).get("tx", "{}"))))
                for _, fields in (found or [])]

    async def customers(self) -> list[str]:
        async with self._translated("listing metered customers"):
            return sorted(text(c) for c in await self.redis.smembers(
                self.keys.metered_customers()))

    async def save_charges(self, charges: Charges) -> None:
        record = {
            "customer": charges.customer, "period": charges.period,
            "currency": charges.currency, "total": str(charges.total),
            "lines": [{"item": ln.item, "quantity": str(ln.quantity), "unit": ln.unit,
                       "unit_price": str(ln.unit_price), "amount": str(ln.amount)}
                      for ln in charges.lines],
            "usage": {"transactions": {s.value: n for s, n in charges.usage.transactions.items()},
                      **{m: getattr(charges.usage, m) for m in MEASURES}},
        }
        async with self._translated(f"saving the charges of {charges.customer}"):
            await self.redis.set(self.keys.charges(charges.customer, charges.period),
                                 json.dumps(record))

    async def charges(self, customer: str, period: str) -> Charges | None:
        async with self._translated(f"reading the charges of {customer}"):
            raw = await self.redis.get(self.keys.charges(customer, period))
        if raw is None:
            return None
        data = json.loads(text(raw))
        counts = {f"tx:{k}": v for k, v in data["usage"]["transactions"].items()}
        usage = _usage(customer, period, {**counts, **{m: data["usage"][m] for m in MEASURES}})
        return Charges(customer, period, data["currency"], tuple(
            ChargeLine(ln["item"], Decimal(ln["quantity"]), ln["unit"],
                       Decimal(ln["unit_price"]), Decimal(ln["amount"]))
            for ln in data["lines"]), usage)


def _transaction(customer: str, f: dict[str, Any]) -> Transaction:
    return Transaction(customer, Service(f["service"]), float(f["at"]), f["params"],
                       **{m: int(f[m]) for m in MEASURES})


def _usage(customer: str, period: str, fields: dict[str, int]) -> Usage:
    counts = {Service(k[3:]): v for k, v in fields.items() if k.startswith("tx:")
              and k[3:] in _SERVICES}
    held = fields.get("held_start" if len(period) == 7 else "held", 0)
    return Usage(customer, period, counts, **{m: int(fields.get(m, 0)) for m in MEASURES},
                 bytes_held=int(held))
