"""Usage per customer in Redis: each transaction kept in a capped stream and added to
its day's and month's totals in one MULTI/EXEC, so concurrent workers never lose an
increment (HINCRBY is atomic; the transaction keeps the three writes together)."""

from __future__ import annotations

import json
from decimal import Decimal

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
from storage.connection import RedisBacked, text

TRANSACTIONS_KEPT = 100_000  # per customer; totals are kept for ever
_SERVICES = {s.value for s in Service}


class RedisUsage(RedisBacked):
    async def record(self, tx: Transaction) -> None:
        day, month = day_of(tx.at), month_of(tx.at)
        amounts = {m: getattr(tx, m) for m in MEASURES}
        async with self._translated(f"recording usage of {tx.customer}"), \
                    self.redis.pipeline(transaction=True) as pipe:
            for period in (day, month):
                key = self.keys.usage(tx.customer, period)
                pipe.hincrby(key, f"tx:{tx.service.value}", 1)
                for measure, amount in amounts.items():
                    if amount:
                        pipe.hincrby(key, measure, amount)
            pipe.sadd(self.keys.usage_days(tx.customer, month), day)
            pipe.sadd(self.keys.metered_customers(), tx.customer)
            pipe.xadd(self.keys.transactions(tx.customer), {
                "service": tx.service.value, "at": repr(tx.at),
                "params": json.dumps(dict(tx.params), sort_keys=True),
                **{m: str(v) for m, v in amounts.items()}},
                maxlen=TRANSACTIONS_KEPT, approximate=True)
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
        return [await self.usage(customer, day) for day in days]

    async def transactions(self, customer: str, count: int = 100) -> list[Transaction]:
        """The newest ``count`` transactions, newest first."""
        async with self._translated(f"reading transactions of {customer}"):
            found = await self.redis.xrevrange(self.keys.transactions(customer), count=count)
        return [_transaction(customer, {text(k): text(v) for k, v in (fields or {}).items()})
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


def _transaction(customer: str, f: dict[str, str]) -> Transaction:
    return Transaction(customer, Service(f["service"]), float(f["at"]), json.loads(f["params"]),
                       **{m: int(f[m]) for m in MEASURES})


def _usage(customer: str, period: str, fields: dict[str, int]) -> Usage:
    counts = {Service(k[3:]): v for k, v in fields.items() if k.startswith("tx:")
              and k[3:] in _SERVICES}
    return Usage(customer, period, counts, **{m: int(fields.get(m, 0)) for m in MEASURES})
