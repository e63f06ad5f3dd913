"""Charge reports: each customer's period priced by the rate card, emailed to their
billing address, published on their web page if they asked, and debited from their
account if they pay that way. Safe to run again for the same period: the email goes
once (a mark per customer and period) and the debit happens once (HSETNX in the store).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime

from bot.errors import BridgeError, StoreError
from bot.flows.outgoing import MARKER
from bot.metering import Charges, Customer, RateCard, Usage, charges_for, held_gb_months
from bot.model import Address, AddressError
from bot.ports import MailSender
from bot.render import render
from bot.stores import CustomerStore, UsageStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReportOutcome:
    customer: str
    period: str
    charges: Charges
    emailed: bool  # sent by this run
    debited: int | None  # the balance after this run's debit, in cents; None: no debit now
    warnings: tuple[str, ...]
    page: str  # the report's web address, or ""
    interim: bool = False  # the period has not ended: a statement so far, nothing settled


class ReportError(Exception):
    """A report cannot be made at all (no rate card); the message says what to set."""


@dataclass(frozen=True)
class Chart:
    """A small bar chart of transactions per day, drawn as SVG by the page template."""

    bars: tuple[tuple[str, int, float], ...]  # (day, transactions, height 0..1)

    @classmethod
    def of(cls, days: list[Usage]) -> Chart:
        top = max((d.total_transactions for d in days), default=0) or 1
        return cls(tuple((d.period, d.total_transactions, d.total_transactions / top)
                         for d in days))


class ChargeReports:
    def __init__(self, *, usage: UsageStore, customers: CustomerStore,
                 mailer: MailSender | None, card: RateCard | None, bot_email: str,
                 public_url: str) -> None:
        self.usage = usage
        self.customers = customers
        self.mailer = mailer
        self.card = card
        self.bot_email = bot_email
        self.public_url = public_url.rstrip("/")

    def _card(self) -> RateCard:
        if self.card is None:
            raise ReportError("there is no rate card: set SWITCHBOARD_RATE_CARD to a TOML "
                              "file with every price (see the README's metering section)")
        return self.card

    async def charges(self, customer: str, period: str) -> Charges:
        """The period's charges so far (all of them once it has ended)."""
        month = await self.usage.usage(customer, parse_period(period))
        days = await self.usage.days(customer, period)
        today = datetime.now(UTC).strftime("%Y-%m-%d")
        until = today if period == current_month() else None
        return charges_for(month, self._card(), held_gb_months(month, days, until))

    async def run(self, period: str) -> list[ReportOutcome]:
        """Every customer's report for ``period`` (a month, ``2026-11``). A month that has
        not ended gets an interim statement: shown, but neither emailed nor debited, and
        the period is not marked reported (its real report comes after it ends)."""
        parse_period(period)
        self._card()
        everyone = sorted(set(await self.customers.all()) | set(await self.usage.customers()))
        return [await self.one(customer, period) for customer in everyone]

    async def one(self, customer_id: str, period: str) -> ReportOutcome:
        charges = await self.charges(customer_id, period)
        customer = await self.customers.get(customer_id) or Customer(customer_id)
        if period >= current_month():
            return ReportOutcome(customer_id, period, charges, False, None,
                                 (f"interim: {period} has not ended, so this is a statement "
                                  "so far; it was not emailed or debited, and the report "
                                  "for the whole month comes after it ends",),
                                 self.page_url(customer, period), interim=True)
        await self.usage.save_charges(charges)
        warnings: list[str] = []
        emailed = await self._email(customer, charges, warnings)
        debited = None
        if customer.pays_by_account and charges.total_minor > 0:
            debited = await self.customers.debit_once(
                customer_id, period, charges.total_minor,
                f"charges for {period}: {charges.total} {charges.currency}")
        if warnings:
            await self.customers.mark_report(customer_id, period, warnings="\n".join(warnings))
        for warning in warnings:
            log.warning("report of %s for %s: %s", customer_id, period, warning)
        log.info("report of %s for %s: %s %s%s%s", customer_id, period, charges.total,
                 charges.currency, ", emailed" if emailed else "",
                 f", debited (balance {debited / 100:.2f})" if debited is not None else "")
        return ReportOutcome(customer_id, period, charges, emailed, debited, tuple(warnings),
                             self.page_url(customer, period))

    def page_url(self, customer: Customer, period: str) -> str:
        """The report's page for ``period``: a link kept for later still shows that month."""
        if not customer.web_report or not customer.web_token:
            return ""
        return f"{self.public_url}/reports/{customer.web_token}?period={period}"

    async def _email(self, customer: Customer, charges: Charges, warnings: list[str]) -> bool:
        if not customer.billing_email:
            warnings.append("no billing address: the report was not emailed (set one with "
                            f"`switchboard customer set {customer.id} --billing-email …`)")
            return False
        if self.mailer is None:
            warnings.append("no SMTP server configured: the report was not emailed")
            return False
        try:
            to = Address.email(customer.billing_email)
        except AddressError as exc:
            warnings.append(f"the billing address is not valid ({exc}): not emailed")
            return False
        if not await self.customers.claim_report_email(customer.id, charges.period):
            return False  # sent before (or being sent by another run)
        try:
            await self.mailer.send(self.compose(customer, charges, to))
        except BridgeError as exc:
            await self.customers.mark_report(customer.id, charges.period)  # lets a rerun try
            warnings.append(f"the report email could not be sent: {exc}")
            return False
        await self.customers.mark_report(customer.id, charges.period,
                                         emailed_at=str(datetime.now(UTC).timestamp()),
                                         emailed_to=to.value)
        return True

    def compose(self, customer: Customer, charges: Charges, to: Address) -> EmailMessage:
        ctx = {"customer": customer, "charges": charges,
               "page": self.page_url(customer, charges.period)}
        msg = EmailMessage()
        msg["From"] = Address.email(self.bot_email).header_form("Switchboard billing")
        msg["To"] = to.header_form()
        msg["Subject"] = f"Switchboard charges for {charges.period}: {charges.total} " \
                         f"{charges.currency}"
        msg["Date"] = format_datetime(datetime.now(UTC))
        domain = self.bot_email.partition("@")[2] or "switchboard.invalid"
        # One Message-ID per customer and period: a resend is recognisably the same report.
        safe = re.sub(r"[^A-Za-z0-9-]+", ".", customer.id)
        msg["Message-ID"] = f"<report.{safe}.{charges.period}@{domain}>"
        msg["Auto-Submitted"] = "auto-generated"  # RFC 3834: not a reply to anyone
        msg[MARKER] = f"report; via={self.bot_email}"
        msg.set_content(render("mail/charge_report.txt.j2", **ctx))
        msg.add_alternative(render("mail/charge_report.html.j2", **ctx), subtype="html")
        return msg

    async def web_page(self, params: Mapping[str, str], query: Mapping[str, str]
                       ) -> tuple[int, str]:
        """GET /reports/{token}?period=YYYY-MM: (HTTP status, the page or why not). The
        token is checked first: whatever else is asked, an unknown one gets a bare 404;
        nothing a visitor sent is ever written back."""
        try:
            customer = await self.customers.by_web_token(params["token"])
        except StoreError:
            return 503, "The report cannot be shown right now; try again in a minute."
        if customer is None:
            return 404, "Not found."
        try:
            period = parse_period(query.get("period") or current_month())
        except ReportError:
            return 400, "The period must be a month, written YYYY-MM."
        try:
            return 200, await self.page_of(customer, period)
        except (ReportError, StoreError):
            return 503, "The report cannot be shown right now; try again in a minute."

    async def page(self, token: str, period: str) -> str | None:
        """The HTML of a customer's report page, or None for an unknown token."""
        customer = await self.customers.by_web_token(token)
        return None if customer is None else await self.page_of(customer, period)

    async def page_of(self, customer: Customer, period: str) -> str:
        charges = await self.charges(customer.id, period)
        chart = Chart.of(await self.usage.days(customer.id, period))
        return render("web/report.html.j2", customer=customer, charges=charges, chart=chart,
                      balance=await self.customers.balance(customer.id)
                      if customer.pays_by_account else None,
                      marks=await self.customers.report_marks(customer.id, period))


def parse_period(period: str) -> str:
    """``period`` if it names a month (``2026-11``); ReportError saying the form if not."""
    if not re.fullmatch(r"\d{4}-(0[1-9]|1[0-2])", period or "") or period < "2000-01":
        raise ReportError(f"{period!r} is not a month; give it as YYYY-MM, like "
                          f"{previous_month()}")
    return period


def current_month(now: float | None = None) -> str:
    at = datetime.fromtimestamp(now, UTC) if now is not None else datetime.now(UTC)
    return at.strftime("%Y-%m")


def report_time(period: str) -> datetime:
    """When ``period``'s report runs: ten minutes into the next month (UTC)."""
    year, month = (int(p) for p in period.split("-"))
    year, month = (year, month + 1) if month < 12 else (year + 1, 1)
    return datetime(year, month, 1, 0, 10, tzinfo=UTC)


def previous_month(now: float | None = None) -> str:
    at = datetime.fromtimestamp(now, UTC) if now is not None else datetime.now(UTC)
    year, month = (at.year, at.month - 1) if at.month > 1 else (at.year - 1, 12)
    return f"{year:04d}-{month:02d}"
