"""Money, dates and times as the customer reads them: their region's way of writing
numbers, in the template's language, in their own time zone."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any
from zoneinfo import ZoneInfo

from babel import Locale, UnknownLocaleError
from babel.dates import format_date, format_datetime
from babel.numbers import format_currency
from jinja2 import pass_context
from jinja2.runtime import Context

from contracts.time_zones import resolve_zone
from services.templating.catalogue import DEFAULT_LOCALE

_RTL_LANGUAGES = frozenset({"ar", "fa", "he", "ps", "sd", "ug", "ur", "yi"})


def _babel_locale(tag: str) -> Locale:
    try:
        return Locale.parse(tag.replace("-", "_"))
    except (UnknownLocaleError, ValueError):
        return Locale.parse(DEFAULT_LOCALE)


def format_locale(template_locale: str, requested: str | None) -> str:
    """Numbers and dates follow the customer's region in the template's language:
    an English template for an en-PK customer shows "Rs 4,500.00", not "PKR4,500.00"."""
    language = template_locale.split("-")[0]
    region = None
    if requested:
        parts = requested.replace("_", "-").split("-")
        region = next((p for p in parts[1:] if len(p) == 2 and p.isalpha()), None)
    if region:
        candidate = f"{language}-{region.upper()}"
        try:
            Locale.parse(candidate.replace("-", "_"))
            return candidate
        except (UnknownLocaleError, ValueError):
            pass
    return template_locale


def text_direction(locale: str) -> str:
    return "rtl" if locale.split("-")[0] in _RTL_LANGUAGES else "ltr"


@pass_context
def _money(context: Context, value: Any, currency: str | None = None) -> str:
    """``{{ cart.total | money(cart.currency) }}`` in the customer's locale: Rs 4,500.00."""
    try:
        amount = Decimal(str(value))
    except InvalidOperation as exc:
        raise ValueError(f"money filter got {value!r}, not an amount") from exc
    code = currency or context.get("currency")
    if not code:
        raise ValueError("money filter needs a currency: {{ amount | money(cart.currency) }}")
    return str(format_currency(amount, code, locale=_babel_locale(context["format_locale"])))


def _as_datetime(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, str):
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    raise ValueError(f"expected a date-time, got {value!r}")


def _zone(name: str | None) -> ZoneInfo:
    # A zone that does not resolve is the template's error, not a date shifted to UTC.
    return resolve_zone(name, falls_back_on=())


@pass_context
def _datetime(context: Context, value: Any, format: str = "medium") -> str:
    """A moment in the customer's own time zone and language."""
    tz = (context.get("customer") or {}).get("timezone")
    return str(
        format_datetime(
            _as_datetime(value),
            format=format,
            tzinfo=_zone(tz),
            locale=_babel_locale(context["format_locale"]),
        )
    )


@pass_context
def _date(context: Context, value: Any, format: str = "long") -> str:
    tz = (context.get("customer") or {}).get("timezone")
    moment = _as_datetime(value).astimezone(_zone(tz))
    locale = _babel_locale(context["format_locale"])
    return str(format_date(moment.date(), format=format, locale=locale))


# What templates write after `|`, beyond Jinja's own.
FILTERS: dict[str, Callable[..., Any]] = {"money": _money, "datetime": _datetime, "date": _date}
