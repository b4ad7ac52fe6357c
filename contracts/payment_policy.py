"""The merchant's payment policy: how much of a partial-COD order is paid upfront, how long
a customer has to pay, and what happens to cash-on-delivery orders nobody confirms.

Pure and exact: amounts are ``Decimal`` in major units, rounded to the currency's minor
unit (JPY 0 digits, INR/PKR/USD 2). The same policy in, the same amounts out, so the order
workflow may compute them in an activity and keep the answer in its history.
"""

from __future__ import annotations

import math
from datetime import timedelta
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_UP, Decimal
from fractions import Fraction
from typing import Literal, Self

from pydantic import BaseModel, Field, model_validator

from contracts.fields import minor_units

Rounding = Literal["up", "half_up", "down"]
_ROUNDING = {"up": ROUND_CEILING, "half_up": ROUND_HALF_UP, "down": ROUND_FLOOR}
Percent = Decimal


class UpfrontRule(BaseModel):
    """Upfront share for partial COD. The most specific rule wins, per line: product, then
    category, then the default percentage; or one fixed amount per order per currency."""

    percent: Percent = Field(default=Decimal(15), ge=0, le=100)
    by_category: dict[str, Percent] = Field(default_factory=dict)
    by_product: dict[str, Percent] = Field(default_factory=dict, description="sku or product_id")
    fixed: dict[str, Decimal] = Field(
        default_factory=dict, description="currency → fixed upfront amount; wins over percent"
    )
    # Below this order total (per currency) partial COD asks nothing upfront.
    minimum_order: dict[str, Decimal] = Field(default_factory=dict)
    rounding: Rounding = "up"

    @model_validator(mode="after")
    def _percentages(self) -> Self:
        for name in ("by_category", "by_product"):
            for key, value in getattr(self, name).items():
                if not Decimal(0) <= value <= Decimal(100):
                    raise ValueError(f"{name}[{key!r}] must be between 0 and 100, got {value}")
        for currency, value in self.fixed.items():
            if value < 0:
                raise ValueError(f"fixed[{currency!r}] must not be negative")
        return self


class PaymentPolicy(BaseModel):
    upfront: UpfrontRule = Field(default_factory=UpfrontRule)
    # Partial COD: when the link is due and when reminders go, counted from placement.
    pay_within: timedelta = timedelta(hours=24)
    reminders: list[timedelta] = Field(
        default_factory=lambda: [timedelta(minutes=15), timedelta(hours=2), timedelta(hours=12)]
    )
    # Prepaid: how long to wait for the capture before the order is given up.
    prepaid_within: timedelta = timedelta(hours=2)
    # COD: ask the customer to confirm by replying YES/NO, and what silence means.
    cod_confirmation: bool = False
    cod_confirm_within: timedelta = timedelta(hours=24)
    cod_no_reply: Literal["hold", "cancel"] = "hold"
    # COD: offer to pay the whole order online now with a discount (0: no offer).
    cod_prepay_offer_percent: Percent = Field(default=Decimal(0), ge=0, le=50)
    cod_prepay_offer_within: timedelta = timedelta(hours=12)
    # Ops are alerted when a confirmed order is not shipped within this.
    ship_within: timedelta = timedelta(hours=24)
    # Payment-link providers by currency; the rest go to Stripe.
    razorpay_currencies: list[str] = Field(default_factory=lambda: ["INR"])

    @model_validator(mode="after")
    def _schedule(self) -> Self:
        if any(r <= timedelta(0) for r in self.reminders):
            raise ValueError("reminders must be positive durations")
        if any(r >= self.pay_within for r in self.reminders):
            raise ValueError("every reminder must come before pay_within")
        self.reminders = sorted(self.reminders)
        return self


class Line(BaseModel):
    sku: str
    quantity: int
    unit_price: Decimal
    category: str | None = None
    product_id: str | None = None


class Split(BaseModel):
    upfront: Decimal
    remaining: Decimal


def quantize(amount: Decimal, currency: str, rounding: Rounding = "half_up") -> Decimal:
    return amount.quantize(Decimal(1).scaleb(-minor_units(currency)), rounding=_ROUNDING[rounding])


def _line_percent(rule: UpfrontRule, line: Line) -> Decimal:
    for key in (line.sku, line.product_id):
        if key is not None and key in rule.by_product:
            return rule.by_product[key]
    if line.category is not None and line.category in rule.by_category:
        return rule.by_category[line.category]
    return rule.percent


def upfront_split(rule: UpfrontRule, lines: list[Line], total: Decimal, currency: str) -> Split:
    """Upfront now, the rest on delivery; ``upfront + remaining == total`` always.

    Percentages apply to each line's share of the order total (so a shop discount or a
    shipping fee in ``total`` is spread pro rata), are summed exactly and rounded once.
    """
    total = quantize(total, currency)
    minimum = rule.minimum_order.get(currency)
    if total <= 0 or (minimum is not None and total < minimum):
        return Split(upfront=Decimal(0).quantize(total), remaining=total)
    if currency in rule.fixed:
        upfront = min(quantize(rule.fixed[currency], currency), total)
        return Split(upfront=upfront, remaining=total - upfront)
    subtotal = sum((Fraction(line.unit_price) * line.quantity for line in lines), Fraction(0))
    if subtotal <= 0:
        raw = Fraction(total) * Fraction(rule.percent) / 100
    else:
        # Exact rational arithmetic: a third of a line must not become 0.333…4 and round up.
        raw = (
            sum(
                (
                    Fraction(total)
                    * Fraction(line.unit_price)
                    * line.quantity
                    / subtotal
                    * Fraction(_line_percent(rule, line))
                    for line in lines
                ),
                Fraction(0),
            )
            / 100
        )
    upfront = min(_round_fraction(raw, currency, rule.rounding), total)
    return Split(upfront=upfront, remaining=total - upfront)


def _round_fraction(value: Fraction, currency: str, rounding: Rounding) -> Decimal:
    digits = minor_units(currency)
    scaled = value * 10**digits
    if rounding == "up":
        units = math.ceil(scaled)
    elif rounding == "down":
        units = math.floor(scaled)
    else:
        units = math.floor(scaled + Fraction(1, 2))
    return Decimal(units).scaleb(-digits).quantize(Decimal(1).scaleb(-digits))


def to_minor(amount: Decimal, currency: str) -> int:
    """Major units to the integer minor units providers take (₹12.34 → 1234, ¥500 → 500)."""
    scaled = amount.scaleb(minor_units(currency))
    if scaled != scaled.to_integral_value():
        raise ValueError(f"{amount} {currency} is finer than the currency's minor unit")
    return int(scaled)


def from_minor(value: int, currency: str) -> Decimal:
    return (
        Decimal(value)
        .scaleb(-minor_units(currency))
        .quantize(Decimal(1).scaleb(-minor_units(currency)))
    )
