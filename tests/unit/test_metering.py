"""Rate card, charges and the pool's scaling decisions: pure functions, checked by hand."""

from __future__ import annotations

import time
from decimal import Decimal
from pathlib import Path

import pytest

from bot.capacity import Bounds, decide
from bot.metering import (
    Measure,
    RateCard,
    RateCardError,
    Service,
    Usage,
    charges_for,
    held_gb_months,
)
from bot.reports import previous_month, report_time
from bot.settings import Settings, SettingsError

CARD = {
    "currency": "EUR",
    "prices": {
        "transfer_per_gb": "0.09", "storage_per_gb_month": "0.25",
        "cpu_per_second": "0.002", "memory_per_gb": "0.01",
        "transaction": {"email_ingested": "0.005", "chat_post": "0.001",
                        "im_delivered": "0.004", "retry": "0.0005", "email_sent": "0.006",
                        "command": "0.0001"},
    },
}


def test_charges_are_usage_times_price_rounded_per_line_to_the_cent() -> None:
    card = RateCard.parse(CARD)
    usage = Usage("slack:T1", "2026-11", {Service.EMAIL_INGESTED: 1001, Service.CHAT_POST: 1001,
                                         Service.COMMAND: 3},
                  bytes_in=3_000_000_000, bytes_out=1_500_000_000, bytes_stored=2_000_000_000,
                  cpu_us=12_345_678, memory_bytes=500_000_000)
    charges = charges_for(usage, card, held=Decimal(2))  # 2 GB held all month
    amounts = {line.item: line.amount for line in charges.lines}
    assert amounts["email ingested transactions"] == Decimal("5.01")  # 5.005 rounds half up
    assert amounts["chat post transactions"] == Decimal("1.00")  # 1.001
    assert amounts["command transactions"] == Decimal("0.00")  # 0.0003
    assert amounts["im delivered transactions"] == Decimal("0.00")
    assert amounts["network transfer (in + out)"] == Decimal("0.41")  # 4.5 GB x 0.09 = 0.405
    assert amounts["storage (history held, daily average)"] == Decimal("0.50")
    assert amounts["CPU time"] == Decimal("0.02")  # 12.345678 s x 0.002 = 0.0247
    assert amounts["memory allocated"] == Decimal("0.01")  # 0.5 GB x 0.01 = 0.005
    assert charges.total == Decimal("6.95")
    assert charges.total_minor == 695
    assert all(isinstance(line.amount, Decimal) for line in charges.lines)


@pytest.mark.parametrize(("change", "words"), [
    (lambda c: c["prices"].pop("cpu_per_second"), "prices.cpu_per_second is missing"),
    (lambda c: c["prices"]["transaction"].pop("retry"), "prices.transaction.retry is missing"),
    (lambda c: c["prices"].update(memory_per_gb="-0.01"), "must be zero or more"),
    (lambda c: c["prices"].update(transfer_per_gb="cheap"), "is not a number"),
    (lambda c: c.update(currency="euros"), "three-letter"),
])
def test_a_bad_rate_card_is_refused_with_the_price_named(change: object, words: str) -> None:
    import copy

    card = copy.deepcopy(CARD)
    change(card)  # type: ignore[operator]
    with pytest.raises(RateCardError, match=words):
        RateCard.parse(card)


def test_settings_refuse_to_start_with_a_bad_rate_card(tmp_path: Path) -> None:
    bad = tmp_path / "card.toml"
    bad.write_text('currency = "EUR"\n[prices]\ntransfer_per_gb = -1\nstorage_per_gb_month = 1\n'
                   'cpu_per_second = 1\nmemory_per_gb = 1\n[prices.transaction]\n'
                   + "".join(f"{s.value} = 0.01\n" for s in Service))
    with pytest.raises(SettingsError, match=r"SWITCHBOARD_RATE_CARD.*transfer_per_gb"):
        Settings.load({"SWITCHBOARD_RATE_CARD": str(bad)})


def test_the_pool_grows_at_once_and_shrinks_one_at_a_time_after_two_short_looks() -> None:
    bounds = Bounds(1, 4, 10)
    assert decide(0, 0, bounds, 0).workers == 1  # never below the floor
    assert decide(35, 1, bounds, 0).workers == 4  # 35 jobs: ceil(3.5) = 4
    assert decide(500, 4, bounds, 0).workers == 4  # never above the ceiling
    first = decide(5, 4, bounds, 0)
    assert first.workers == 4 and first.wants_fewer  # one short look: wait
    second = decide(5, 4, bounds, 1)
    assert second.workers == 3 and "shrink 4 -> 3" in second.reason
    assert "5 job(s) waiting, 10 per worker, bounds 1..4" in second.reason


def test_report_periods() -> None:
    assert report_time("2026-12").isoformat() == "2027-01-01T00:10:00+00:00"
    assert previous_month(1_767_225_600.0) == "2025-12"  # 2026-01-01


def test_storage_is_what_is_held_each_day_averaged_over_the_month() -> None:
    """November has 30 days. It began with 3 GB held; on the 11th the day ended with 6 GB
    and nothing changed after: 10 days x 3 GB + 20 days x 6 GB = 150 GB-days = 5 GB-month.
    Bytes added in the month (3 GB) would have given 3."""
    month = Usage("slack:T1", "2026-11", {}, bytes_stored=3 * 10**9, bytes_held=3 * 10**9)
    days = [Usage("slack:T1", "2026-11-11", {}, bytes_held=6 * 10**9)]
    assert held_gb_months(month, days) == Decimal(5)
    # An unfinished month counts the days so far: up to the 15th, 10 x 3 + 5 x 6 = 60.
    assert held_gb_months(month, days, until="2026-11-15") == Decimal(60) / Decimal(30)


@pytest.mark.parametrize("period", ["2026-13", "2026-00", "26-11", "2026-1", "nonsense", "",
                                    "1999-12"])
def test_a_period_that_is_not_a_month_is_refused_with_the_form(period: str) -> None:
    from bot.reports import ReportError, parse_period

    with pytest.raises(ReportError, match="YYYY-MM"):
        parse_period(period)
    assert parse_period("2026-10") == "2026-10"


def _burn(seconds: float) -> None:
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass


def test_cpu_is_shared_among_the_work_open_at_the_same_time() -> None:
    """Two emails in hand at once are each charged half of what the process spent while
    both were open: the charges add up to the CPU used, never twice over."""
    first = Measure()
    _burn(0.05)  # first alone
    second = Measure()
    _burn(0.1)  # both open
    one, two = first.cpu_us(), second.cpu_us()
    assert 85_000 <= one <= 130_000 and 40_000 <= two <= 65_000
    del second
    _burn(0.05)  # first alone again: all of it is first's
    assert 135_000 <= first.cpu_us() <= 185_000
    later = Measure()
    assert later.cpu_us() < 5_000  # none of what came before
