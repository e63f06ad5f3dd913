"""Usage, charges, customers and their accounts against both stores (memory and Redis)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from bot.metering import ChargeLine, Charges, Customer, Service, Transaction, Usage
from tests.contract.conftest import AnyStore

DAY1 = datetime(2026, 3, 4, 10, tzinfo=UTC).timestamp()
DAY2 = datetime(2026, 3, 9, 10, tzinfo=UTC).timestamp()


def tx(at: float, service: Service = Service.EMAIL_INGESTED, stored: int = 0,
       customer: str = "slack:T1") -> Transaction:
    return Transaction(customer, service, at, {"network": "slack"}, bytes_in=100,
                       bytes_out=10, bytes_stored=stored, cpu_us=7, memory_bytes=50)


async def test_usage_adds_up_by_day_and_month(store: AnyStore) -> None:
    usage = store.usage
    await usage.record_all([tx(DAY1, stored=1000), tx(DAY1, Service.CHAT_POST),
                            tx(DAY2, stored=500)])
    month = await usage.usage("slack:T1", "2026-03")
    assert month.transactions == {Service.EMAIL_INGESTED: 2, Service.CHAT_POST: 1}
    assert (month.bytes_in, month.bytes_out, month.bytes_stored, month.cpu_us,
            month.memory_bytes) == (300, 30, 1500, 21, 150)
    assert month.bytes_held == 0  # what the month began with
    days = await usage.days("slack:T1", "2026-03")
    assert [d.period for d in days] == ["2026-03-04", "2026-03-09"]
    assert [d.bytes_held for d in days] == [1000, 1500]  # what each day ended with
    assert await usage.customers() == ["slack:T1"]
    assert await usage.usage("slack:T2", "2026-03") == Usage("slack:T2", "2026-03", {})


async def test_transactions_read_newest_first(store: AnyStore) -> None:
    await store.usage.record_all([tx(DAY1), tx(DAY2, Service.CHAT_POST)])
    newest = await store.usage.transactions("slack:T1", 1)
    assert [(t.service, t.at, dict(t.params)) for t in newest] == \
        [(Service.CHAT_POST, DAY2, {"network": "slack"})]


async def test_charges_round_trip(store: AnyStore) -> None:
    usage = Usage("slack:T1", "2026-03", {Service.EMAIL_INGESTED: 2}, bytes_in=300)
    charges = Charges("slack:T1", "2026-03", "EUR", (
        ChargeLine("Emails", Decimal("2"), "email", Decimal("0.0100"), Decimal("0.02")),), usage)
    assert await store.usage.charges("slack:T1", "2026-03") is None
    await store.usage.save_charges(charges)
    found = await store.usage.charges("slack:T1", "2026-03")
    assert found is not None and found.total == Decimal("0.02")
    assert found.lines == charges.lines and found.usage.transactions == usage.transactions


async def test_a_customer_page_has_a_token_until_the_page_is_turned_off(store: AnyStore) -> None:
    customers = store.customers
    saved = await customers.save(Customer("slack:T1", "Acme", "billing@acme.test",
                                          web_report=True))
    assert len(saved.web_token) >= 20
    assert await customers.by_web_token(saved.web_token) == saved
    assert await customers.by_web_token("guess") is None
    again = await customers.save(Customer("slack:T1", "Acme Ltd", web_report=True))
    assert again.web_token == saved.web_token  # the link people kept still works
    await customers.save(Customer("slack:T1", "Acme Ltd", web_report=False))
    assert await customers.by_web_token(saved.web_token) is None
    assert await customers.all() == ["slack:T1"]
    assert await customers.get("slack:T9") is None


async def test_a_report_email_is_claimed_once_and_marked(store: AnyStore) -> None:
    customers = store.customers
    assert await customers.claim_report_email("slack:T1", "2026-03")
    assert not await customers.claim_report_email("slack:T1", "2026-03")  # being sent
    await customers.mark_report("slack:T1", "2026-03")  # failed: lets a rerun try
    assert await customers.claim_report_email("slack:T1", "2026-03")
    await customers.mark_report("slack:T1", "2026-03", emailed_at="1700000000")
    assert not await customers.claim_report_email("slack:T1", "2026-03")
    assert await customers.report_marks("slack:T1", "2026-03") == {"emailed_at": "1700000000"}


async def test_an_account_is_debited_once_per_period(store: AnyStore) -> None:
    customers = store.customers
    assert await customers.credit("slack:T1", 5000, "prepaid") == 5000
    assert await customers.debit_once("slack:T1", "2026-03", 1234, "March") == 3766
    assert await customers.debit_once("slack:T1", "2026-03", 1234, "March") is None
    assert await customers.balance("slack:T1") == 3766
    assert await customers.balance("slack:T9") == 0
    ledger = await customers.ledger("slack:T1")
    assert [(e.kind, e.amount_minor, e.balance_minor, e.period) for e in ledger] == \
        [("credit", 5000, 5000, ""), ("debit", 1234, 3766, "2026-03")]
