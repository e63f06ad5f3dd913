"""`switchboard customer|account|report|usage`: customers, their accounts and charges."""

from __future__ import annotations

import argparse
import sys
import uuid
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from typing import Any

from bot.metering import CENT, Customer
from bot.model import Address, AddressError
from bot.reports import (
    ChargeReports,
    ReportError,
    current_month,
    parse_period,
    previous_month,
)
from bot.runtime.command import load_settings, with_store
from bot.settings import Settings
from storage.store import Store


def _reports(settings: Settings, store: Store) -> ChargeReports:
    from bridges.email.smtp import smtp_sender

    mailer = smtp_sender(settings, logins=store.logins)
    return ChargeReports(usage=store.usage, customers=store.customers, mailer=mailer,
                         card=settings.rate_card,
                         bot_email=settings.bot_email or "switchboard@localhost",
                         public_url=settings.public_url)


def _customer_id(text: str) -> str:
    kind, _, rest = text.partition(":")
    if kind not in ("slack", "matrix") or not rest:
        raise ValueError(f"{text!r} is not a customer id: slack:TEAM_ID or matrix:server.name")
    return text


def cmd_customer(args: argparse.Namespace) -> int:
    async def work(settings: Settings, store: Store) -> list[str]:
        cid = _customer_id(args.id)
        current = await store.customers.get(cid) or Customer(cid)
        if args.action == "set":
            billing = current.billing_email if args.billing_email is None else args.billing_email
            if billing:
                try:
                    billing = Address.email(billing).value
                except AddressError as exc:
                    raise ValueError(f"--billing-email: {exc}") from None
            current = await store.customers.save(Customer(
                cid, current.name if args.name is None else args.name, billing,
                current.web_report if args.web_report is None else args.web_report,
                current.web_token,
                current.pays_by_account if args.pay_by_account is None else args.pay_by_account))
        reports = _reports(settings, store)
        lines = [f"customer {cid} ({current.name or 'no name'})",
                 f"  billing address: {current.billing_email or '(none: reports are not emailed)'}",
                 f"  web report: {reports.page_url(current, previous_month()) or 'no'}",
                 f"  payment: {'debit the account' if current.pays_by_account else 'invoice'}",
                 f"  balance: {Decimal(await store.customers.balance(cid)) * CENT}"]
        return lines

    return with_store(args, work)


def cmd_account(args: argparse.Namespace) -> int:
    async def work(settings: Settings, store: Store) -> list[str]:
        cid = _customer_id(args.id)
        if args.action == "credit":
            try:
                amount = Decimal(args.amount)
            except InvalidOperation:
                raise ValueError(f"{args.amount!r} is not an amount like 50.00") from None
            if amount <= 0 or amount != amount.quantize(CENT):
                raise ValueError(f"{args.amount!r}: credit a positive amount in whole cents")
            await store.customers.credit(cid, int(amount / CENT), args.note or "credit")
        lines = [f"account of {cid}: balance "
                 f"{Decimal(await store.customers.balance(cid)) * CENT}"]
        for e in await store.customers.ledger(cid):
            sign = "-" if e.kind == "debit" else "+"
            lines.append(f"  {e.kind:6} {sign}{Decimal(e.amount_minor) * CENT:>10}  "
                         f"balance {Decimal(e.balance_minor) * CENT:>10}  {e.note}")
        return lines

    return with_store(args, work)


def cmd_report(args: argparse.Namespace) -> int:
    try:
        period = parse_period(args.period or previous_month())
    except ReportError as exc:
        print(f"switchboard: {exc}", file=sys.stderr)
        return 2
    if args.enqueue:
        from storage.keys import Keys
        from storage.queue import RqScheduler

        settings = load_settings(args)
        scheduler = RqScheduler(settings.redis, Keys(settings.redis_prefix))
        job = scheduler.schedule_reports(period, job_id=f"reports-{period}-manual-"
                                                        f"{uuid.uuid4().hex[:8]}")
        print(f"charge reports for {period} queued as job {job}")
        return 0

    async def work(settings: Settings, store: Store) -> list[str]:
        lines = []
        for o in await _reports(settings, store).run(period):
            debit = "" if o.debited is None else f" debited, balance {Decimal(o.debited) * CENT}"
            lines.append(f"{o.customer} {o.period}{' (interim)' if o.interim else ''}: "
                         f"{o.charges.total} {o.charges.currency}"
                         f"{' emailed' if o.emailed else ''}{debit}"
                         f"{' page ' + o.page if o.page else ''}")
            lines += [f"  warning: {w}" for w in o.warnings]
        return lines or [f"no customers with usage in {period}"]

    return with_store(args, work)


def cmd_usage(args: argparse.Namespace) -> int:
    async def work(settings: Settings, store: Store) -> list[str]:
        cid = _customer_id(args.id)
        period = args.period or current_month()
        usage = await store.usage.usage(cid, period)
        lines = [f"usage of {cid} in {period}:"]
        lines += [f"  {s.value}: {n}" for s, n in sorted(usage.transactions.items())]
        lines.append(f"  bytes in {usage.bytes_in}, out {usage.bytes_out}, stored "
                     f"{usage.bytes_stored}; CPU {usage.cpu_us / 1e6:.3f} s; memory "
                     f"{usage.memory_bytes} B")
        if settings.rate_card is not None:
            charges = await _reports(settings, store).charges(cid, period)
            lines += [f"  {ln.item}: {ln.quantity} {ln.unit} x {ln.unit_price} = {ln.amount}"
                      for ln in charges.lines]
            lines.append(f"  total {charges.total} {charges.currency}")
        return lines

    return with_store(args, work)


def _flag(parser: argparse.ArgumentParser, name: str, help: str) -> None:
    parser.add_argument(f"--{name}", dest=name.replace("-", "_"), action="store_true",
                        default=None, help=help)
    parser.add_argument(f"--no-{name}", dest=name.replace("-", "_"), action="store_false",
                        help=f"undo --{name}")


def add_billing_commands(sub: Any) -> None:
    customer = sub.add_parser("customer", help="show or change a customer (billing address, "
                                               "web report, account payment)")
    customer.add_argument("action", choices=["show", "set"])
    customer.add_argument("id", help="slack:TEAM_ID or matrix:server.name")
    customer.add_argument("--name")
    customer.add_argument("--billing-email", help="where reports are emailed ('' for none)")
    _flag(customer, "web-report", "also publish each report on a private web page")
    _flag(customer, "pay-by-account", "debit each period's total from the account")
    account = sub.add_parser("account", help="a customer's account: balance and ledger")
    account.add_argument("action", choices=["show", "credit"])
    account.add_argument("id", help="slack:TEAM_ID or matrix:server.name")
    account.add_argument("amount", nargs="?", default="0", help="with credit: like 50.00")
    account.add_argument("--note", default="")
    report = sub.add_parser("report", help="make every customer's charge report for a month "
                                           "(email, web page, account debit); safe to repeat")
    report.add_argument("--period", help="YYYY-MM (default: last month)")
    report.add_argument("--enqueue", action="store_true",
                        help="queue it for the workers instead of running it here")
    usage = sub.add_parser("usage", help="a customer's usage (and charges) for a month")
    usage.add_argument("id", help="slack:TEAM_ID or matrix:server.name")
    usage.add_argument("--period", help="YYYY-MM (default: this month)")


BILLING_COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "customer": cmd_customer, "account": cmd_account, "report": cmd_report, "usage": cmd_usage}
