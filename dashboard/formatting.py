"""Numbers, money, rates and times as the shop reads them: Babel, in ``SUTRA_SHOP_LOCALE``,
times in the shop's time zone. Registered as Jinja2 filters."""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from babel import Locale
from babel.dates import format_date, format_datetime, format_timedelta
from babel.numbers import format_compact_decimal, format_currency, format_decimal, format_percent

_CODE_DIGIT = re.compile(r"([A-Za-z])(\d)")
_DIGIT_CODE = re.compile(r"(\d)([A-Za-z])")
DASH = "\u2013"  # an en dash: no figure


class Formats:
    def __init__(self, locale: str, zone: ZoneInfo) -> None:
        self.locale = Locale.parse(locale)
        self.zone = zone

    def filters(self) -> dict[str, Any]:
        return {
            "number": self.number,
            "compact": self.compact,
            "money": self.money,
            "percent": self.percent,
            "points": self.points,
            "day": self.day,
            "when": self.when,
            "duration": self.duration,
        }

    def number(self, value: int | float | Decimal | None) -> str:
        return DASH if value is None else format_decimal(value, locale=self.locale)

    def compact(self, value: int | float | Decimal | None) -> str:
        if value is None:
            return DASH
        return format_compact_decimal(value, locale=self.locale, fraction_digits=1)

    def money(self, amount: str | Decimal | int | None, currency: str) -> str:
        if amount is None:
            return DASH
        shown = format_currency(Decimal(str(amount)), currency, locale=self.locale)
        # CLDR's currency spacing, which Babel leaves out: "PKR 4,500.00", not "PKR4,500.00".
        return _CODE_DIGIT.sub("\\1\u00a0\\2", _DIGIT_CODE.sub("\\1\u00a0\\2", shown))

    def percent(self, value: float | Decimal | None, digits: int = 1, signed: bool = False) -> str:
        if value is None:
            return DASH
        pattern = "#,##0." + "0" * digits + "%" if digits else "#,##0%"
        if signed:  # a change: "+12.5%", "-3.0%"
            pattern = f"+{pattern};-{pattern}"
        return format_percent(value, format=pattern, locale=self.locale)

    def points(self, value: float | None, digits: int = 1) -> str:
        """A difference of two rates in percentage points: 0.052 is "+5.2 pts"."""
        if value is None:
            return DASH
        pattern = "#,##0." + "0" * digits if digits else "#,##0"
        shown = format_decimal(value * 100, format=f"+{pattern};-{pattern}", locale=self.locale)
        return f"{shown}\u00a0pts"

    def day(self, value: date | str | None, form: str = "medium") -> str:
        if value is None:
            return DASH
        if isinstance(value, str):
            value = date.fromisoformat(value)
        return format_date(value, format=form, locale=self.locale)

    def when(self, value: datetime | None) -> str:
        if value is None:
            return DASH
        return format_datetime(value, format="medium", tzinfo=self.zone, locale=self.locale)

    def duration(self, seconds: float | None) -> str:
        if seconds is None:
            return DASH
        return format_timedelta(timedelta(seconds=seconds), threshold=1.5, locale=self.locale)

    def short_day(self, value: date) -> str:
        """A chart's axis label: "3 Dec"."""
        return format_date(value, format="d MMM", locale=self.locale)
