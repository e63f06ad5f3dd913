"""Customers, their report marks and their accounts (a ledger with a balance).

The balance is an integer of minor units (cents) changed with INCRBY, and a period's
debit is written with HSETNX in the same script as the balance change: a report job
that runs twice, or two workers at once, debit a period once."""

from __future__ import annotations

import json
import secrets
import time

from bot.metering import Customer, LedgerEntry
from storage.connection import RedisBacked, text

# KEYS: debits hash, balance, ledger. ARGV: period, amount, at, note.
# Returns the balance after the debit, or nil when the period was already debited.
_DEBIT_ONCE = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then return nil end
local balance = redis.call('INCRBY', KEYS[2], -tonumber(ARGV[2]))
local entry = cjson.encode({at=tonumber(ARGV[3]), kind='debit', amount_minor=tonumber(ARGV[2]),
                            balance_minor=balance, note=ARGV[4], period=ARGV[1]})
redis.call('HSET', KEYS[1], ARGV[1], entry)
redis.call('RPUSH', KEYS[3], entry)
return balance
"""

# KEYS: balance, ledger. ARGV: amount, at, note.
_CREDIT = """
local balance = redis.call('INCRBY', KEYS[1], tonumber(ARGV[1]))
redis.call('RPUSH', KEYS[2], cjson.encode({at=tonumber(ARGV[2]), kind='credit',
  amount_minor=tonumber(ARGV[1]), balance_minor=balance, note=ARGV[3], period=''}))
return balance
"""


class RedisCustomers(RedisBacked):
    async def save(self, customer: Customer) -> Customer:
        """Create or change a customer; a web page gets its token the first time."""
        current = await self.get(customer.id)
        token = customer.web_token or (current.web_token if current else "")
        if customer.web_report and not token:
            token = secrets.token_urlsafe(24)
        saved = Customer(customer.id, customer.name, customer.billing_email,
                         customer.web_report, token, customer.pays_by_account)
        async with self._translated(f"saving customer {customer.id}"), \
                    self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(self.keys.customer(customer.id), mapping={
                "name": saved.name, "billing_email": saved.billing_email,
                "web_report": int(saved.web_report), "web_token": saved.web_token,
                "pays_by_account": int(saved.pays_by_account)})
            pipe.sadd(self.keys.customers(), customer.id)
            if token:
                pipe.hset(self.keys.report_pages(), token, customer.id)
            await pipe.execute()
        return saved

    async def get(self, customer_id: str) -> Customer | None:
        async with self._translated(f"reading customer {customer_id}"):
            raw = await self.redis.hgetall(self.keys.customer(customer_id))
        if not raw:
            return None
        f = {text(k): text(v) for k, v in raw.items()}
        return Customer(customer_id, f.get("name", ""), f.get("billing_email", ""),
                        f.get("web_report") == "1", f.get("web_token", ""),
                        f.get("pays_by_account") == "1")

    async def all(self) -> list[str]:
        async with self._translated("listing customers"):
            return sorted(text(c) for c in await self.redis.smembers(self.keys.customers()))

    async def by_web_token(self, token: str) -> Customer | None:
        async with self._translated("finding a report page"):
            found = await self.redis.hget(self.keys.report_pages(), token)
        customer = await self.get(text(found)) if found else None
        # A page whose customer stopped asking for it is gone.
        return customer if customer and customer.web_report and \
            secrets.compare_digest(customer.web_token, token) else None

    # --- the report job's marks ---------------------------------------------------------

    async def claim_report_email(self, customer_id: str, period: str, ttl: int = 600) -> bool:
        """True when this caller may send the period's email: not sent, not being sent."""
        key = self.keys.report_mark(customer_id, period)
        async with self._translated("claiming a report email"):
            if await self.redis.hexists(key, "emailed_at"):
                return False
            return bool(await self.redis.set(self.keys.report_sending(customer_id, period), "1",
                                             nx=True, ex=ttl))

    async def mark_report(self, customer_id: str, period: str, **fields: str) -> None:
        key = self.keys.report_mark(customer_id, period)
        async with self._translated("marking a report"):
            if fields:
                await self.redis.hset(key, mapping=dict(fields.items()))
            await self.redis.delete(self.keys.report_sending(customer_id, period))

    async def report_marks(self, customer_id: str, period: str) -> dict[str, str]:
        async with self._translated("reading a report's marks"):
            raw = await self.redis.hgetall(self.keys.report_mark(customer_id, period))
        return {text(k): text(v) for k, v in raw.items()}

    # --- accounts -----------------------------------------------------------------------

    async def credit(self, customer_id: str, amount_minor: int, note: str) -> int:
        async with self._translated(f"crediting {customer_id}'s account"):
            return int(await self.redis.eval(
                _CREDIT, 2, self.keys.account_balance(customer_id),
                self.keys.account_ledger(customer_id), amount_minor, time.time(), note))

    async def debit_once(self, customer_id: str, period: str, amount_minor: int,
                         note: str) -> int | None:
        """Debit the period's total; None when the period was debited before."""
        async with self._translated(f"debiting {customer_id}'s account"):
            balance = await self.redis.eval(
                _DEBIT_ONCE, 3, self.keys.account_debits(customer_id),
                self.keys.account_balance(customer_id), self.keys.account_ledger(customer_id),
                period, amount_minor, time.time(), note)
        return None if balance is None else int(balance)

    async def balance(self, customer_id: str) -> int:
        async with self._translated(f"reading {customer_id}'s balance"):
            return int(await self.redis.get(self.keys.account_balance(customer_id)) or 0)

    async def ledger(self, customer_id: str) -> list[LedgerEntry]:
        async with self._translated(f"reading {customer_id}'s ledger"):
            raw = await self.redis.lrange(self.keys.account_ledger(customer_id), 0, -1)
        return [LedgerEntry(**json.loads(text(r))) for r in raw]
