"""Metering end to end for two customers (a Slack workspace and a Matrix organisation):
real flows are measured, summed and charged; the report job runs twice through RQ and
emails once, debits once; the web page is read in headless Chromium."""

from __future__ import annotations

import calendar
import email
import os
import sys
from collections.abc import AsyncIterator
from decimal import ROUND_HALF_UP, Decimal
from email import policy
from pathlib import Path

import aiohttp
import pytest

from bot.metering import MEASURES, Customer, Service
from bot.reports import current_month, previous_month
from storage.store import Store
from tests.bridge import SLACK_PEOPLE, Bridge, running_bridge
from tests.conftest import Services
from tests.integration.test_commands import matrix_runner, slack_runner
from tests.integration.test_reply_in_chat import email_card, reply_from_slack
from tests.mailhelp import clear_mailbox, eventually, mailbox, make_mail, send_mail
from tests.slackapi.client import SlackControl

pytestmark = pytest.mark.integration

PRICES = {"transfer_per_gb": "0.09", "storage_per_gb_month": "0.25",
          "cpu_per_second": "0.05", "memory_per_gb": "2.00"}
PER_TX = {"email_ingested": "0.013", "chat_post": "0.002", "im_delivered": "0.005",
          "retry": "0.001", "email_sent": "0.01", "command": "0.0035"}
MATRIX = "matrix:switchboard.test"


@pytest.fixture
async def bridge(services: Services, slack: SlackControl, http: aiohttp.ClientSession,
                 tmp_path: Path) -> AsyncIterator[Bridge]:
    card = tmp_path / "rate-card.toml"
    card.write_text('currency = "EUR"\n[prices]\n'
                    + "".join(f'{k} = "{v}"\n' for k, v in PRICES.items())
                    + "[prices.transaction]\n"
                    + "".join(f'{k} = "{v}"\n' for k, v in PER_TX.items()))
    for user in ("alice", "carol"):
        await clear_mailbox(services, user)
    async with running_bridge(services, slack, http, SWITCHBOARD_RATE_CARD=str(card)) as b:
        yield b


def cli_env(bridge: Bridge) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")}
    env.update(bridge.env)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


async def switchboard(bridge: Bridge, *args: str) -> str:
    from tests.servers import run_cli

    code, out, err = await run_cli(*args, env=cli_env(bridge), limit=180)
    assert code == 0, err[-3000:]
    return out


def expected_amount(quantity: Decimal, price: str) -> Decimal:
    return (quantity * Decimal(price)).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)


async def test_two_customers_measured_charged_reported_and_debited_once(bridge: Bridge) -> None:
    services, store = bridge.services, bridge.runtime.store
    slack_customer = f"slack:{bridge.team}"
    period = current_month()
    await store.customers.save(Customer(slack_customer, "Acme (Slack)",
                                        services.email("carol"), web_report=True,
                                        pays_by_account=True))
    await store.customers.credit(slack_customer, 5000, "prepaid")
    await store.customers.save(Customer(MATRIX, "Acme (Matrix)", web_report=True))

    # --- real flows: two emails into Slack, one into Matrix, a reply, two commands ------
    card = await email_card(bridge, services.email("alice"), "Metered one", "First.")
    await email_card(bridge, services.email("alice"), "Metered two", "Second.")
    await send_mail(services, make_mail("alice@partner.test", services.email("sales"),
                                        "Metered three", "Third."))

    async def in_room() -> bool:
        return any("Metered three" in e["content"]["body"] for e in await bridge.room_posts())

    await eventually(in_room, what="the Matrix post")
    await reply_from_slack(bridge, card, "Thanks, metered.")
    slack_usage = await slack_runner(bridge, SLACK_PEOPLE["bob"], "bob")("usage")
    assert "email ingested: 2" in slack_usage and "Charges so far:" in slack_usage
    matrix_usage = await matrix_runner(bridge, bridge.alice)("usage")
    assert f"Usage of {MATRIX}" in matrix_usage and "email ingested: 1" in matrix_usage

    async def delivered() -> bool:
        return (await store.usage.usage(slack_customer, period)).transactions.get(
            Service.IM_DELIVERED, 0) == 1

    await eventually(delivered, what="the reply's transaction")

    # --- transactions, and the sums -----------------------------------------------------
    slack_tx = await store.usage.transactions(slack_customer, 100)
    matrix_tx = await store.usage.transactions(MATRIX, 100)
    assert sorted(t.service.value for t in slack_tx) == sorted(
        ["email_ingested", "email_ingested", "chat_post", "chat_post", "im_delivered",
         "command"])
    assert sorted(t.service.value for t in matrix_tx) == sorted(
        ["email_ingested", "chat_post", "command"])
    # Bytes received are the emails exactly as the IMAP server holds them.
    raw = {str(email.message_from_bytes(m, policy=policy.default)["Subject"]): len(m)
           for m in await mailbox(services, "switchboard")}
    ingested = sorted(t.bytes_in for t in slack_tx if t.service is Service.EMAIL_INGESTED)
    assert ingested == sorted([raw["Metered one"], raw["Metered two"]])
    assert [t.bytes_in for t in matrix_tx if t.service is Service.EMAIL_INGESTED] == \
        [raw["Metered three"]]
    assert all(t.cpu_us > 0 for t in slack_tx if t.service is Service.EMAIL_INGESTED)
    # The DM sent carries the reply and the conversation so far: all of it is bytes out.
    (im,) = [t for t in slack_tx if t.service is Service.IM_DELIVERED]
    assert im.bytes_out > len(b"Thanks, metered.") + len(b"First.") + len(b"Metered one")
    for customer, txs in ((slack_customer, slack_tx), (MATRIX, matrix_tx)):
        month = await store.usage.usage(customer, period)
        (day,) = await store.usage.days(customer, period)
        for measure in MEASURES:
            total = sum(getattr(t, measure) for t in txs)
            assert getattr(month, measure) == getattr(day, measure) == total, measure
        assert month.total_transactions == len(txs)

    # --- mid-month: an interim statement, nothing settled ---------------------------
    interim = await switchboard(bridge, "report", "--period", period)
    assert f"{slack_customer} {period} (interim)" in interim and "not emailed" in interim
    assert [e.kind for e in await store.customers.ledger(slack_customer)] == ["credit"]
    assert await store.customers.report_marks(slack_customer, period) == {}

    # --- the month ends: what was recorded now stands as last month's usage ---------
    held = sum(t.bytes_stored for t in slack_tx)
    period, day = await move_to_last_month(store, [slack_customer, MATRIX], period)

    # --- the report job, twice, through RQ ---------------------------------------------
    for _ in range(2):
        await switchboard(bridge, "report", "--period", period, "--enqueue")
    await switchboard(bridge, "worker", "--burst")
    again = await switchboard(bridge, "report", "--period", period)  # a third time, here
    assert f"{MATRIX} {period}" in again and "warning: no billing address" in again
    assert "(interim)" not in again

    charges = await bridge.runtime.reports.charges(slack_customer, period)  # type: ignore[union-attr]
    usage = charges.usage
    # Storage: nothing held before; from the day of use to the month's end, all of it.
    length = calendar.monthrange(*map(int, period.split("-")))[1]
    gb_months = Decimal(held * (length - day + 1)) / Decimal(10**9) / Decimal(length)
    assert held > 0
    storage = next(ln for ln in charges.lines if ln.item.startswith("storage"))
    assert storage.quantity == gb_months and storage.unit == "GB-month"
    expected = {f"{s.replace('_', ' ')} transactions":
                expected_amount(Decimal(usage.transactions.get(Service(s), 0)), p)
                for s, p in PER_TX.items()}
    expected["network transfer (in + out)"] = expected_amount(
        Decimal(usage.bytes_in + usage.bytes_out) / Decimal(10**9), PRICES["transfer_per_gb"])
    expected["CPU time"] = expected_amount(Decimal(usage.cpu_us) / Decimal(10**6),
                                           PRICES["cpu_per_second"])
    assert {ln.item: ln.amount for ln in charges.lines if ln.item in expected} == expected
    assert expected["email ingested transactions"] == Decimal("0.03")  # 2 x 0.013 = 0.026
    assert charges.total == sum(ln.amount for ln in charges.lines)

    reports = [email.message_from_bytes(m, policy=policy.default)
               for m in await mailbox(services, "carol")]
    reports = [m for m in reports if f"Switchboard charges for {period}" in str(m["Subject"])]
    assert len(reports) == 1, "the report was emailed more than once"
    body = reports[0].get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert f"Total: {charges.total} EUR" in body
    assert "email ingested transactions" in body
    slack_page = next(line.strip() for line in body.splitlines() if "/reports/" in line)
    assert slack_page.endswith(f"?period={period}")
    ledger = await store.customers.ledger(slack_customer)
    assert [e.kind for e in ledger] == ["credit", "debit"]
    assert ledger[1].amount_minor == charges.total_minor and ledger[1].period == period
    assert await store.customers.balance(slack_customer) == 5000 - charges.total_minor
    marks = await store.customers.report_marks(MATRIX, period)
    assert "no billing address" in marks["warnings"]
    assert await store.customers.ledger(MATRIX) == []

    # --- the web page, in a real browser -----------------------------------------------
    matrix_customer = await store.customers.get(MATRIX)
    assert matrix_customer is not None and len(matrix_customer.web_token) >= 32
    base = bridge.settings.public_url
    matrix_charges = await bridge.runtime.reports.charges(MATRIX, period)  # type: ignore[union-attr]
    await check_page_in_browser(f"{base}/reports/{matrix_customer.web_token}?period={period}",
                                f"{matrix_charges.total} EUR")
    # The paying customer's page (no warnings at all), opened from the emailed link.
    slack_charges = await bridge.runtime.reports.charges(slack_customer, period)  # type: ignore[union-attr]
    await check_page_in_browser(slack_page, f"{slack_charges.total} EUR")
    async with aiohttp.ClientSession() as http, http.get(
            f"{slack_page.partition('?')[0]}?period=2026-13") as nonsense:
        assert nonsense.status == 400 and "YYYY-MM" in await nonsense.text()
    async with aiohttp.ClientSession() as http, http.get(
            f"{base}/reports/{'x' * 32}") as guessed:
        assert guessed.status == 404
    # Nothing a visitor sends comes back, and no answer may be sniffed as HTML.
    script = "<script>alert(document.cookie)</script>"
    async with aiohttp.ClientSession() as http:
        for url, status in ((f"{base}/reports/{'x' * 32}?period={script}", 404),
                            (f"{slack_page.partition('?')[0]}?period={script}", 400),
                            (f"{base}/reports/{script}", 404),
                            (f"{base}/no-such-page", 404), (f"{base}/healthz", 200),
                            (slack_page, 200)):
            async with http.get(url) as answer:
                body = await answer.text()
                assert answer.status == status, (url, body)
                assert "script" not in body.lower() and "alert" not in body, (url, body)
                assert answer.headers["X-Content-Type-Options"] == "nosniff", url
        async with http.get(f"{base}/reports/{'x' * 32}?period={script}") as unknown:
            assert await unknown.text() == "Not found."


async def move_to_last_month(store: Store, customers: list[str], period: str
                             ) -> tuple[str, int]:
    """Rename this month's usage records (the month, its days) to last month's, on the
    same day number: the state the report finds once a month has ended."""
    last = previous_month()
    length = calendar.monthrange(*map(int, last.split("-")))[1]
    day_number = 0
    for customer in customers:
        for day in sorted(await store.redis.smembers(store.keys.usage_days(customer, period))):
            day_number = min(int(day[-2:]), length)
            moved = f"{last}-{day_number:02d}"
            await store.redis.rename(store.keys.usage(customer, day),
                                     store.keys.usage(customer, moved))
            await store.redis.sadd(store.keys.usage_days(customer, last), moved)
        await store.redis.delete(store.keys.usage_days(customer, period))
        await store.redis.rename(store.keys.usage(customer, period),
                                 store.keys.usage(customer, last))
    return last, day_number


async def check_page_in_browser(url: str, total: str) -> None:
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        browser = await p.chromium.launch(
            executable_path="/usr/bin/chromium",
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"])
        try:
            page = await browser.new_page()
            response = await page.goto(url)
            assert response is not None and response.status == 200
            assert "Switchboard charges for" in await page.title()
            assert (await page.inner_text("#total")).strip() == total
            rows = await page.locator("#lines tr").count()
            assert rows == 1 + 10 + 1  # header, ten lines, total
            bars = page.locator("#chart rect.bar")
            assert await bars.count() == 1  # one day with use
            box = await bars.first.bounding_box()
            assert box is not None and box["height"] > 50 and box["width"] > 5
            shot = await page.screenshot(full_page=True)
            assert len(shot) > 1000
        finally:
            await browser.close()
