"""In memory: usage per customer, their charges, customers and their accounts."""

from __future__ import annotations

import secrets
import time
from collections import Counter, deque

from bot.metering import (
    MEASURES,
    Charges,
    Customer,
    LedgerEntry,
    Service,
    Transaction,
    Usage,
    day_of,
    month_of,
)
from storage.memory.clock import Expiring
from storage.usage import TRANSACTIONS_KEPT


class MemoryUsage:
    def __init__(self) -> None:
        self.totals: dict[tuple[str, str], Counter[str]] = {}  # (customer, day or month)
        self.days_of: dict[tuple[str, str], set[str]] = {}
        self.held: Counter[str] = Counter()
        self.held_start: dict[tuple[str, str], int] = {}
        self.held_at_day_end: dict[tuple[str, str], int] = {}
        self.streams: dict[str, deque[Transaction]] = {}
        self.saved: dict[tuple[str, str], Charges] = {}

    async def record_all(self, txs: list[Transaction]) -> None:
        for tx in txs:
            day, month = day_of(tx.at), month_of(tx.at)
            before = self.held[tx.customer]
            self.held[tx.customer] += tx.bytes_stored
            self.held_start.setdefault((tx.customer, month), before)
            self.held_at_day_end[(tx.customer, day)] = self.held[tx.customer]
            for period in (day, month):
                totals = self.totals.setdefault((tx.customer, period), Counter())
                totals[f"tx:{tx.service.value}"] += 1
                for measure in MEASURES:
                    totals[measure] += getattr(tx, measure)
            self.days_of.setdefault((tx.customer, month), set()).add(day)
            self.streams.setdefault(tx.customer, deque(maxlen=TRANSACTIONS_KEPT)).append(tx)

    async def usage(self, customer: str, period: str) -> Usage:
        totals = self.totals.get((customer, period), Counter())
        held = (self.held_start if len(period) == 7 else self.held_at_day_end).get(
            (customer, period), 0)
        counts = {s: totals[f"tx:{s.value}"] for s in Service if totals[f"tx:{s.value}"]}
        return Usage(customer, period, counts, **{m: totals[m] for m in MEASURES},
                     bytes_held=held)

    async def days(self, customer: str, month: str) -> list[Usage]:
        return [await self.usage(customer, day)
                for day in sorted(self.days_of.get((customer, month), ()))]

    async def transactions(self, customer: str, count: int = 100) -> list[Transaction]:
        return list(reversed(self.streams.get(customer, ())))[:count]

    async def customers(self) -> list[str]:
        return sorted({customer for customer, _ in self.totals})

    async def save_charges(self, charges: Charges) -> None:
        self.saved[(charges.customer, charges.period)] = charges

    async def charges(self, customer: str, period: str) -> Charges | None:
        return self.saved.get((customer, period))


class MemoryCustomers:
    def __init__(self) -> None:
        self.records: dict[str, Customer] = {}
        self.pages: dict[str, str] = {}
        self.marks: dict[tuple[str, str], dict[str, str]] = {}
        self.sending: Expiring[str] = Expiring()
        self.balances: Counter[str] = Counter()
        self.ledgers: dict[str, list[LedgerEntry]] = {}
        self.debited: dict[tuple[str, str], LedgerEntry] = {}

    async def save(self, customer: Customer) -> Customer:
        current = self.records.get(customer.id)
        token = customer.web_token or (current.web_token if current else "")
        if customer.web_report and not token:
            token = secrets.token_urlsafe(24)
        saved = Customer(customer.id, customer.name, customer.billing_email,
                         customer.web_report, token, customer.pays_by_account)
        self.records[customer.id] = saved
        if token:
            self.pages[token] = customer.id
        return saved

    async def get(self, customer_id: str) -> Customer | None:
        return self.records.get(customer_id)

    async def all(self) -> list[str]:
        return sorted(self.records)

    async def by_web_token(self, token: str) -> Customer | None:
        customer_id = self.pages.get(token)
        customer = self.records.get(customer_id) if customer_id else None
        return customer if customer and customer.web_report and \
            secrets.compare_digest(customer.web_token, token) else None

    async def claim_report_email(self, customer_id: str, period: str, ttl: int = 600) -> bool:
        if "emailed_at" in self.marks.get((customer_id, period), {}):
            return False
        return self.sending.set_new(f"{customer_id}|{period}", "1", ttl)

    async def mark_report(self, customer_id: str, period: str, **fields: str) -> None:
        if fields:
            self.marks.setdefault((customer_id, period), {}).update(fields)
        self.sending.delete(f"{customer_id}|{period}")

    async def report_marks(self, customer_id: str, period: str) -> dict[str, str]:
        return dict(self.marks.get((customer_id, period), {}))

    async def credit(self, customer_id: str, amount_minor: int, note: str) -> int:
        self.balances[customer_id] += amount_minor
        self.ledgers.setdefault(customer_id, []).append(LedgerEntry(
            at=time.time(), kind="credit", amount_minor=amount_minor,
            balance_minor=self.balances[customer_id], note=note, period=""))
        return self.balances[customer_id]

    async def debit_once(self, customer_id: str, period: str, amount_minor: int,
                         note: str) -> int | None:
        if (customer_id, period) in self.debited:
            return None
        self.balances[customer_id] -= amount_minor
        entry = LedgerEntry(at=time.time(), kind="debit", amount_minor=amount_minor,
                            balance_minor=self.balances[customer_id], note=note, period=period)
        self.debited[(customer_id, period)] = entry
        self.ledgers.setdefault(customer_id, []).append(entry)
        return self.balances[customer_id]

    async def balance(self, customer_id: str) -> int:
        return self.balances[customer_id]

    async def ledger(self, customer_id: str) -> list[LedgerEntry]:
        return list(self.ledgers.get(customer_id, []))
