"""Validated value types shared by the API, activities and workflows.

Each type normalises what it accepts (E.164 phones, lower-cased email domains, upper-case
currency codes) so that everything downstream compares like with like.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from functools import cache
from typing import Annotated, Any
from zoneinfo import available_timezones

import phonenumbers
import pycountry
from babel import Locale, UnknownLocaleError
from babel.numbers import get_currency_precision
from email_validator import EmailNotValidError, validate_email
from pydantic import AfterValidator, BeforeValidator, Field, PlainSerializer

# Codes ISO 4217 reserves for testing and "no currency": never a shop's price.
_NON_MONEY_CODES = frozenset({"XTS", "XXX", "XDR", "XAU", "XAG", "XPD", "XPT", "XSU", "XUA"})


@cache
def _currencies() -> frozenset[str]:
    return frozenset(c.alpha_3 for c in pycountry.currencies) - _NON_MONEY_CODES


@cache
def _countries() -> frozenset[str]:
    return frozenset(c.alpha_2 for c in pycountry.countries)


@cache
def _timezones() -> frozenset[str]:
    return frozenset(available_timezones())


def minor_units(currency: str) -> int:
    """Digits after the decimal point for a currency (JPY 0, INR 2, KWD 3)."""
    return int(get_currency_precision(currency))


def _currency(value: str) -> str:
    code = value.strip().upper()
    if code not in _currencies():
        raise ValueError(f"{value!r} is not an ISO 4217 currency code")
    return code


def _country(value: str) -> str:
    code = value.strip().upper()
    if code not in _countries():
        raise ValueError(f"{value!r} is not an ISO 3166-1 alpha-2 country code")
    return code


def _timezone(value: str) -> str:
    if value not in _timezones():
        raise ValueError(f"{value!r} is not an IANA time zone (e.g. 'Asia/Karachi')")
    return value


def _locale(value: str) -> str:
    try:
        parsed = Locale.parse(value.replace("_", "-"), sep="-")
    except (UnknownLocaleError, ValueError, TypeError) as exc:
        raise ValueError(f"{value!r} is not a known locale (e.g. 'en-PK', 'ur')") from exc
    return "-".join(p for p in (parsed.language, parsed.script, parsed.territory) if p)


def _phone(value: str) -> str:
    raw = value.strip()
    if raw.startswith("00"):
        raw = "+" + raw[2:]
    if not raw.startswith("+"):
        raise ValueError("phone must be in international format starting with '+' (E.164)")
    try:
        number = phonenumbers.parse(raw, None)
    except phonenumbers.NumberParseException as exc:
        raise ValueError(f"phone is not a valid number: {exc}") from exc
    if not phonenumbers.is_valid_number(number):
        raise ValueError(f"{value!r} is not a valid phone number")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def _email(value: str) -> str:
    try:
        result = validate_email(value, check_deliverability=False)
    except EmailNotValidError as exc:
        raise ValueError(f"email is not valid: {exc}") from exc
    return str(result.normalized)


_DECIMAL_RE = re.compile(r"^-?\d+(\.\d+)?$")


def _decimal_string(value: Any) -> Any:
    # Floats are refused: 0.1 + 0.2 is how shops lose money.
    if isinstance(value, (bool, float)):
        raise ValueError('money must be a decimal string such as "4500.00", not a JSON number')
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, str):
        if not _DECIMAL_RE.match(value.strip()):
            raise ValueError(f'{value!r} is not a decimal amount such as "4500.00"')
        try:
            return Decimal(value.strip())
        except InvalidOperation as exc:  # pragma: no cover - the regex already guards this
            raise ValueError(f"{value!r} is not a decimal amount") from exc
    return value


def _non_negative(value: Decimal) -> Decimal:
    if value < 0:
        raise ValueError("amount must not be negative")
    return value


Currency = Annotated[str, AfterValidator(_currency), Field(examples=["PKR"])]
Country = Annotated[str, AfterValidator(_country), Field(examples=["PK"])]
Timezone = Annotated[str, AfterValidator(_timezone), Field(examples=["Asia/Karachi"])]
LocaleTag = Annotated[str, AfterValidator(_locale), Field(examples=["en-PK"])]
Phone = Annotated[str, AfterValidator(_phone), Field(examples=["+923001234567"])]
Email = Annotated[str, AfterValidator(_email), Field(examples=["a@example.com"])]
Money = Annotated[
    Decimal,
    BeforeValidator(_decimal_string),
    AfterValidator(_non_negative),
    PlainSerializer(lambda d: format(d, "f"), return_type=str, when_used="json"),
    Field(examples=["4500.00"]),
]
Identifier = Annotated[
    str,
    Field(
        min_length=1,
        max_length=128,
        # Printable ASCII without spaces: room for "gid://shopify/Cart/1" and the like.
        pattern=r"^[!-~]+$",
        examples=["evt_123"],
    ),
]


def check_money_precision(amount: Decimal, currency: str, field: str) -> None:
    """Refuse amounts finer than the currency's minor unit (e.g. 10.5 JPY, 1.001 USD)."""
    digits = minor_units(currency)
    exponent = amount.as_tuple().exponent
    if (
        isinstance(exponent, int)
        and -exponent > digits
        and amount != amount.quantize(Decimal(1).scaleb(-digits))
    ):
        raise ValueError(f"{field} {amount} has more than {digits} decimal places for {currency}")


def utc_instant(value: datetime) -> datetime:
    """An aware date-time in UTC; ValueError when that falls outside years 1-9999.

    ``9999-12-31T23:59:59-01:00`` parses, but in UTC it is in year 10000, which Python's
    datetime cannot hold (nor can ``0001-01-01T00:00:00+01:00``, in year 0)."""
    try:
        return value.astimezone(UTC)
    except (OverflowError, ValueError):
        raise ValueError(
            f"{value.isoformat()} is outside the years 1-9999 once converted to UTC"
        ) from None


def unix_instant(seconds: Any) -> datetime | None:
    """A provider's Unix time (seconds) as a UTC date-time; None when it is not one."""
    if isinstance(seconds, bool) or not isinstance(seconds, int | float | str):
        return None
    try:
        number = float(seconds)
        if not math.isfinite(number):
            return None
        return datetime.fromtimestamp(number, UTC)
    except (ValueError, OverflowError, OSError):
        return None
