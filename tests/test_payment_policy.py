"""Upfront amounts for partial COD are exact in every currency: rounded once, to the
currency's minor unit, and upfront + remaining is always the order total."""

from __future__ import annotations

from decimal import Decimal

import pytest
from pydantic import ValidationError

from contracts.payment_policy import (
    Line,
    PaymentPolicy,
    UpfrontRule,
    from_minor,
    to_minor,
    upfront_split,
)


def _line(price: str, quantity: int = 1, **values: str) -> Line:
    return Line(
        sku=values.pop("sku", "SKU1"), quantity=quantity, unit_price=Decimal(price), **values
    )


@pytest.mark.parametrize(
    ("currency", "total", "percent", "upfront", "remaining"),
    [
        ("INR", "2999.99", "15", "450.00", "2549.99"),  # 449.9985 rounds up to the paisa
        ("INR", "1000.00", "15", "150.00", "850.00"),
        ("PKR", "4500.00", "15", "675.00", "3825.00"),
        ("PKR", "3333.33", "10", "333.34", "2999.99"),  # 333.333 up
        ("USD", "80.00", "15", "12.00", "68.00"),
        ("USD", "19.99", "20", "4.00", "15.99"),  # 3.998 up
        ("JPY", "12345", "15", "1852", "10493"),  # 1851.75 up, whole yen
        ("JPY", "999", "10", "100", "899"),  # 99.9 up
        ("KWD", "10.005", "15", "1.501", "8.504"),  # three decimals: 1.50075 up
    ],
)
def test_upfront_is_rounded_once_to_the_minor_unit(
    currency: str, total: str, percent: str, upfront: str, remaining: str
):
    rule = UpfrontRule(percent=Decimal(percent))

    split = upfront_split(rule, [_line(total)], Decimal(total), currency)

    assert (str(split.upfront), str(split.remaining)) == (upfront, remaining)
    assert split.upfront + split.remaining == Decimal(total)


def test_thirds_are_computed_exactly_not_as_repeating_decimals():
    # Three equal lines at 10%: 30.00 upfront exactly, not 30.01 from 0.333… rounding up.
    lines = [_line("100.00", sku=f"S{i}") for i in range(3)]

    split = upfront_split(UpfrontRule(percent=Decimal(10)), lines, Decimal("300.00"), "INR")

    assert split.upfront == Decimal("30.00")


def test_product_beats_category_beats_default():
    rule = UpfrontRule(
        percent=Decimal(10),
        by_category={"electronics": Decimal(20)},
        by_product={"PHONE": Decimal(25)},
    )
    lines = [
        _line("1000.00", sku="PHONE", category="electronics"),  # 25% → 250
        _line("500.00", sku="CABLE", category="electronics"),  # 20% → 100
        _line("500.00", sku="SHIRT", category="apparel"),  # 10% → 50
    ]

    split = upfront_split(rule, lines, Decimal("2000.00"), "INR")

    assert split.upfront == Decimal("400.00")


def test_a_shop_discount_in_the_total_is_spread_over_the_lines():
    rule = UpfrontRule(percent=Decimal(10), by_category={"electronics": Decimal(20)})
    lines = [_line("100.00", category="electronics"), _line("100.00", sku="B")]

    # The shop took 50 off: lines sum to 200, the customer owes 150.
    split = upfront_split(rule, lines, Decimal("150.00"), "USD")

    assert split.upfront == Decimal("22.50")  # 75 * 20% + 75 * 10%


def test_fixed_amount_and_minimum_order_value():
    rule = UpfrontRule(
        fixed={"PKR": Decimal("500")}, minimum_order={"PKR": Decimal("2000"), "INR": Decimal("999")}
    )

    assert upfront_split(rule, [_line("4500")], Decimal("4500.00"), "PKR").upfront == Decimal(
        "500.00"
    )
    below = upfront_split(rule, [_line("1500")], Decimal("1500.00"), "PKR")
    assert (below.upfront, below.remaining) == (Decimal("0.00"), Decimal("1500.00"))
    # A fixed amount never exceeds the order.
    tiny = UpfrontRule(fixed={"USD": Decimal("50")})
    assert upfront_split(tiny, [_line("30")], Decimal("30.00"), "USD").upfront == Decimal("30.00")


def test_rounding_down_or_half_up_when_the_merchant_prefers():
    lines = [_line("19.99")]
    down = UpfrontRule(percent=Decimal(20), rounding="down")
    half = UpfrontRule(percent=Decimal(15), rounding="half_up")

    assert upfront_split(down, lines, Decimal("19.99"), "USD").upfront == Decimal("3.99")
    assert upfront_split(half, lines, Decimal("19.99"), "USD").upfront == Decimal("3.00")


def test_minor_units_for_providers():
    assert to_minor(Decimal("449.85"), "INR") == 44985
    assert to_minor(Decimal("1852"), "JPY") == 1852
    assert to_minor(Decimal("1.501"), "KWD") == 1501
    assert from_minor(44985, "INR") == Decimal("449.85")
    assert str(from_minor(1852, "JPY")) == "1852"
    with pytest.raises(ValueError, match="finer than"):
        to_minor(Decimal("10.5"), "JPY")


def test_a_policy_with_impossible_numbers_is_refused():
    with pytest.raises(ValidationError, match="by_category"):
        UpfrontRule(by_category={"x": Decimal(120)})
    with pytest.raises(ValidationError, match="before pay_within"):
        PaymentPolicy.model_validate({"pay_within": "PT1H", "reminders": ["PT2H"]})
