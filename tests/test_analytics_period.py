"""The period every analytics figure is read over, and the CSV every analytics endpoint
can answer with."""

from __future__ import annotations

from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

import pytest

from api.analytics_export import csv_text
from contracts.errors import Unprocessable
from services.analytics.period import MAX_DAYS, period

KARACHI = ZoneInfo("Asia/Karachi")


def test_a_period_is_whole_days_in_the_shops_zone():
    march = period(date(2026, 3, 1), date(2026, 3, 31), KARACHI)

    # Karachi is UTC+5: the shop's 1 March begins at 19:00 UTC on 28 February.
    assert march.start_utc == datetime(2026, 2, 28, 19, tzinfo=UTC)
    assert march.end_utc == datetime(2026, 3, 31, 19, tzinfo=UTC)
    assert len(march.days) == 31
    assert march.describe() == {
        "from": "2026-03-01",
        "to": "2026-03-31",
        "time_zone": "Asia/Karachi",
    }


def test_a_period_left_open_is_the_last_30_days_to_today_in_the_shops_zone():
    # 20:00 UTC on 9 May is already 10 May in Karachi.
    default = period(None, None, KARACHI, now=datetime(2026, 5, 9, 20, tzinfo=UTC))

    assert (default.start, default.end) == (date(2026, 4, 11), date(2026, 5, 10))
    assert period(
        date(2026, 5, 1), None, KARACHI, now=datetime(2026, 5, 9, tzinfo=UTC)
    ).end == date(2026, 5, 9)


def test_a_period_backwards_or_too_long_is_refused_naming_from():
    with pytest.raises(Unprocessable) as backwards:
        period(date(2026, 3, 2), date(2026, 3, 1), KARACHI)
    with pytest.raises(Unprocessable) as long:
        period(date(2020, 1, 1), date(2026, 1, 1), KARACHI)

    assert backwards.value.fields == [
        {"loc": ["query", "from"], "msg": "must not be after to (2026-03-01)"}
    ]
    assert long.value.fields is not None
    assert long.value.fields[0]["loc"] == ["query", "from"]
    assert str(MAX_DAYS) in long.value.detail


def test_csv_has_every_column_once_and_empty_cells_for_missing_values():
    text = csv_text(
        [
            {"rule": "cart", "channel": "email", "sent": 3},
            {"rule": "cart", "channel": "sms", "sent": 1, "revenue_INR": "1,200.00"},
            {"rule": "win, back", "channel": None, "sent": 0},
        ]
    )

    assert text.splitlines() == [
        "rule,channel,sent,revenue_INR",
        "cart,email,3,",
        'cart,sms,1,"1,200.00"',
        '"win, back",,0,',
    ]
