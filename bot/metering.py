"""Metering: every bridged operation is a transaction of a customer, measured; a rate
card turns a period's summed usage into charges.

A customer is a Slack workspace (``slack:T0123``) or a Matrix organisation, one per
homeserver (``matrix:example.org``). Money is Decimal throughout, each charge line
rounded half-up to the cent, the total the sum of the rounded lines, so the report
adds up to what a reader checks with a calculator.
"""

from __future__ import annotations

import calendar
import enum
import logging
import time
import tomllib
import tracemalloc
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from email.message import EmailMessage
from pathlib import Path
from typing import Protocol

from bot.errors import StoreError
from bot.model import Address, HistoryEntry, Network

log = logging.getLogger(__name__)

CENT = Decimal("0.01")
GB = Decimal(10) ** 9


class Service(enum.StrEnum):
    EMAIL_INGESTED = "email_ingested"
    CHAT_POST = "chat_post"
    IM_DELIVERED = "im_delivered"
    RETRY = "retry"
    EMAIL_SENT = "email_sent"
    COMMAND = "command"


MEASURES = ("bytes_in", "bytes_out", "bytes_stored", "cpu_us", "memory_bytes")


@dataclass(frozen=True)
class Transaction:
    customer: str
    service: Service
    at: float
    params: Mapping[str, str] = field(default_factory=dict)
    bytes_in: int = 0  # payload received: the raw email, the chat text
    bytes_out: int = 0  # payload sent: the chat post, the email
    bytes_stored: int = 0  # newly kept in history
    cpu_us: int = 0  # process CPU time around the work, microseconds
    memory_bytes: int = 0  # allocated for the work (see Measure)


def customer_of(address: Address) -> str | None:
    """The customer a chat account belongs to; None for an email address."""
    if address.network is Network.SLACK:
        return f"slack:{address.value.partition('/')[0]}"
    if address.network is Network.MATRIX:
        return f"matrix:{address.value.partition(':')[2]}"
    return None


def entry_size(entry: HistoryEntry) -> int:
    """Bytes an entry adds to history: its text, subject and metadata."""
    return (len(entry.text.encode()) + len(entry.subject.encode())
            + sum(len(k) + len(v.encode()) for k, v in entry.meta.items()))


def message_size(message: EmailMessage) -> int:
    """About the bytes an email takes on the wire: its headers and its parts' encoded
    payloads (within a few per cent of the flattened size, without flattening it again,
    which costs milliseconds for a long history)."""
    size = 0
    for part in message.walk():
        size += sum(len(k) + len(str(v)) + 4 for k, v in part.items())
        payload = part.get_payload()
        if isinstance(payload, str):
            size += len(payload)
    return size


def month_of(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m")


def day_of(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d")


class UsageRecorder(Protocol):
    async def record_all(self, txs: list[Transaction]) -> None:
        """Keep each transaction and add it to its customer's day and month totals, each
        atomically, all in one round trip."""


class _CpuShares:
    """The process's CPU time split evenly among the measures open at the same time.

    On a busy event loop the work of several emails interleaves; each is charged its
    share of what the process spent while it was open, so the charges add up to the CPU
    actually used and no customer pays for another's work. Kept as a running "CPU per
    open measure" total, so joining and reading cost the same however many are open;
    a measure leaves the sharing when it is dropped."""

    def __init__(self) -> None:
        self.open = 0
        self.last = time.process_time()
        self.per_measure = 0.0  # what each measure open from the start would have had

    def settle(self) -> None:
        now = time.process_time()
        spent, self.last = now - self.last, now
        if self.open:
            self.per_measure += spent / self.open

    def join(self, measure: Measure) -> float:
        self.settle()
        self.open += 1
        weakref.finalize(measure, self.leave)
        return self.per_measure

    def leave(self) -> None:
        self.settle()
        self.open -= 1

    def since(self, mark: float) -> float:
        self.settle()
        return self.per_measure - mark


_SHARES = _CpuShares()


class Measure:
    """CPU and memory around one piece of work.

    CPU is this work's share of the process's CPU time while it ran (see _CpuShares).
    Memory comes from tracemalloc when it is tracing (``SWITCHBOARD_METER_MEMORY``: the
    peak of allocations during the work), otherwise from the payload sizes the work
    held."""

    def __init__(self) -> None:
        self.cpu0 = _SHARES.join(self)
        self.mem0 = tracemalloc.get_traced_memory()[0] if tracemalloc.is_tracing() else 0

    def cpu_us(self) -> int:
        return max(0, int(_SHARES.since(self.cpu0) * 1_000_000))

    def memory(self, payload: int) -> int:
        if not tracemalloc.is_tracing():
            return payload
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.reset_peak()
        return max(0, peak - self.mem0)


class Meter:
    """Records transactions; a meter without a recorder records nothing."""

    def __init__(self, recorder: UsageRecorder | None = None) -> None:
        self.recorder = recorder

    def start(self) -> Measure:
        return Measure()

    @property
    def recording(self) -> bool:
        return self.recorder is not None

    @staticmethod
    def transaction(measure: Measure, service: Service, customer: str, *, bytes_in: int = 0,
                    bytes_out: int = 0, bytes_stored: int = 0, **params: str) -> Transaction:
        return Transaction(customer, service, time.time(), params, bytes_in, bytes_out,
                           bytes_stored, measure.cpu_us(), measure.memory(bytes_in + bytes_out))

    async def finish(self, measure: Measure, service: Service, customer: str | None, *,
                     bytes_in: int = 0, bytes_out: int = 0, bytes_stored: int = 0,
                     **params: str) -> Transaction | None:
        if customer is None:
            return None
        tx = self.transaction(measure, service, customer, bytes_in=bytes_in,
                              bytes_out=bytes_out, bytes_stored=bytes_stored, **params)
        return tx if await self.record(tx) else None

    async def record(self, *txs: Transaction) -> bool:
        if self.recorder is None or not txs:
            return False
        try:
            await self.recorder.record_all(list(txs))
        except StoreError as exc:
            # The work is done; failing it now would repeat it. The gap is logged.
            log.error("usage not recorded (%s): %s", ", ".join(
                f"{t.customer} {t.service.value}" for t in txs), exc)
            return False
        return True


# --- customers ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Customer:
    id: str  # slack:T0123 or matrix:example.org
    name: str = ""
    billing_email: str = ""  # where the report is emailed; empty: nowhere (a warning)
    web_report: bool = False  # also publish the report on a web page
    web_token: str = ""  # the page's unguessable path part
    pays_by_account: bool = False  # debit the account with each period's total


@dataclass(frozen=True)
class LedgerEntry:
    at: float
    kind: str  # credit or debit
    amount_minor: int  # positive; debits are subtracted
    balance_minor: int  # after this entry
    note: str
    period: str = ""


# --- usage and charges ------------------------------------------------------------------


@dataclass(frozen=True)
class Usage:
    customer: str
    period: str  # "2026-11" (a month) or "2026-11-25" (a day)
    transactions: Mapping[Service, int]
    bytes_in: int = 0
    bytes_out: int = 0
    bytes_stored: int = 0
    cpu_us: int = 0
    memory_bytes: int = 0
    # History held: for a day, the standing total it ended with; for a month, the one it
    # began with (both sampled from the customer's running total).
    bytes_held: int = 0

    @property
    def total_transactions(self) -> int:
        return sum(self.transactions.values())


class RateCardError(ValueError):
    """The rate card cannot be used; the message names the price and what is wrong."""


@dataclass(frozen=True)
class RateCard:
    currency: str
    transfer_per_gb: Decimal  # bytes in + out
    storage_per_gb_month: Decimal  # history held, averaged over the month's days
    cpu_per_second: Decimal
    memory_per_gb: Decimal  # allocated
    per_transaction: Mapping[Service, Decimal]

    @classmethod
    def load(cls, path: str) -> RateCard:
        try:
            data = tomllib.loads(Path(path).read_text())
        except OSError as exc:
            raise RateCardError(f"cannot read the rate card {path}: {exc.strerror}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise RateCardError(f"the rate card {path} is not valid TOML: {exc}") from exc
        return cls.parse(data, path)

    @classmethod
    def parse(cls, data: Mapping[str, object], where: str = "the rate card") -> RateCard:
        prices = data.get("prices")
        if not isinstance(prices, dict):
            raise RateCardError(f"{where}: no [prices] table")
        per_tx = prices.get("transaction")
        if not isinstance(per_tx, dict):
            raise RateCardError(f"{where}: no [prices.transaction] table (a price for each "
                                f"of {', '.join(s.value for s in Service)})")
        currency = data.get("currency")
        if not isinstance(currency, str) or not currency.isalpha() or len(currency) != 3:
            raise RateCardError(f"{where}: currency must be a three-letter code like \"EUR\"")
        return cls(
            currency=currency.upper(),
            transfer_per_gb=_price(prices, "transfer_per_gb", where),
            storage_per_gb_month=_price(prices, "storage_per_gb_month", where),
            cpu_per_second=_price(prices, "cpu_per_second", where),
            memory_per_gb=_price(prices, "memory_per_gb", where),
            per_transaction={s: _price(per_tx, s.value, where, "prices.transaction.")
                             for s in Service})


def _price(table: Mapping[str, object], name: str, where: str, path: str = "prices.") -> Decimal:
    if name not in table:
        raise RateCardError(f"{where}: the price {path}{name} is missing")
    value = table[name]
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise RateCardError(f"{where}: {path}{name} = {value!r} is not a price")
    try:
        # A float goes through its shortest text form: 0.1 stays 0.1, not 0.1000000000000000055.
        price = Decimal(str(value))
    except InvalidOperation:
        raise RateCardError(f"{where}: {path}{name} = {value!r} is not a number") from None
    if not price.is_finite() or price < 0:
        raise RateCardError(f"{where}: {path}{name} = {value!r} must be zero or more")
    return price


@dataclass(frozen=True)
class ChargeLine:
    item: str
    quantity: Decimal
    unit: str
    unit_price: Decimal
    amount: Decimal  # quantity times unit price, rounded half-up to the cent


@dataclass(frozen=True)
class Charges:
    customer: str
    period: str
    currency: str
    lines: tuple[ChargeLine, ...]
    usage: Usage

    @property
    def total(self) -> Decimal:
        return sum((line.amount for line in self.lines), Decimal("0.00"))

    @property
    def total_minor(self) -> int:
        """The total in cents, for the ledger."""
        return int((self.total / CENT).to_integral_value())


def _line(item: str, quantity: Decimal, unit: str, price: Decimal) -> ChargeLine:
    return ChargeLine(item, quantity, unit, price,
                      (quantity * price).quantize(CENT, rounding=ROUND_HALF_UP))


def held_gb_months(month: Usage, days: Sequence[Usage], until: str | None = None
                   ) -> Decimal:
    """Storage as everyone bills it: the history held each day of the month (the total
    it ended with, carried over days without use), summed and divided by the month's
    length, in GB-months. ``until`` (a day, ``2026-11-25``) ends an unfinished month."""
    year, number = (int(x) for x in month.period.split("-"))
    length = calendar.monthrange(year, number)[1]
    samples = {d.period: d.bytes_held for d in days}
    held, total = month.bytes_held, 0
    for day in range(1, length + 1):
        name = f"{month.period}-{day:02d}"
        if until is not None and name > until:
            break
        held = samples.get(name, held)
        total += held
    return Decimal(total) / GB / length


def charges_for(usage: Usage, card: RateCard, held: Decimal = Decimal(0)) -> Charges:
    """``held``: the month's storage in GB-months (see held_gb_months)."""
    lines = [
        _line(f"{service.value.replace('_', ' ')} transactions",
              Decimal(usage.transactions.get(service, 0)), "transaction", price)
        for service, price in card.per_transaction.items()
    ]
    lines += [
        _line("network transfer (in + out)", Decimal(usage.bytes_in + usage.bytes_out) / GB,
              "GB", card.transfer_per_gb),
        _line("storage (history held, daily average)", held, "GB-month",
              card.storage_per_gb_month),
        _line("CPU time", Decimal(usage.cpu_us) / Decimal(1_000_000), "CPU-second",
              card.cpu_per_second),
        _line("memory allocated", Decimal(usage.memory_bytes) / GB, "GB", card.memory_per_gb),
    ]
    return Charges(usage.customer, usage.period, card.currency, tuple(lines), usage)
