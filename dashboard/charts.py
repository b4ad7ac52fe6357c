"""Chart specifications for dashboard.js: plain data (type, labels, series), written into
the page as JSON beside the table that carries the same figures for screen readers and for
anyone without JavaScript."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from dashboard.formatting import Formats
from services.analytics.period import Period

# One restrained palette: ink blue first, then teal, amber, slate (contrast >= 3:1 on white).
PALETTE = ("#2f4b7c", "#1b8a7a", "#c27c0e", "#6b7280", "#9c4668")
CHANNEL_NAMES = {"email": "Email", "sms": "SMS", "whatsapp": "WhatsApp", "none": "No channel"}
PAYMENT_TYPE_NAMES = {"cod": "COD", "partial_cod": "Partial COD", "prepaid": "Prepaid"}


def _labels(period: Period, formats: Formats) -> list[str]:
    return [formats.short_day(d) for d in period.days]


def revenue_chart(overview: dict[str, Any], period: Period, formats: Formats) -> dict[str, Any]:
    by_day: dict[str, list[Decimal]] = overview["revenue"]["by_day"]
    return {
        "type": "bar",
        "labels": _labels(period, formats),
        "money": True,
        "series": [
            {"label": currency, "data": [float(v) for v in values], "color": PALETTE[n % 5]}
            for n, (currency, values) in enumerate(by_day.items())
        ],
    }


def messages_chart(overview: dict[str, Any], period: Period, formats: Formats) -> dict[str, Any]:
    by_day: dict[str, list[int]] = overview["messages"]["by_day"]
    return {
        "type": "bar",
        "stacked": True,
        "labels": _labels(period, formats),
        "series": [
            {"label": CHANNEL_NAMES.get(c, c), "data": values, "color": PALETTE[n % 5]}
            for n, (c, values) in enumerate(by_day.items())
        ],
    }


def funnel_chart(stages: list[tuple[str, int]]) -> dict[str, Any]:
    return {
        "type": "bar",
        "horizontal": True,
        "labels": [name for name, _ in stages],
        "series": [{"label": "Count", "data": [n for _, n in stages], "color": PALETTE[0]}],
    }


def variants_chart(experiment: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "bar",
        "horizontal": True,
        "percent": True,
        "labels": [v["name"] for v in experiment["variants"]],
        "series": [
            {
                "label": "Conversion rate",
                "data": [v["conversion_rate"] for v in experiment["variants"]],
                "color": PALETTE[1],
            }
        ],
    }


def collections_chart(figures: dict[str, Any], period: Period, formats: Formats) -> dict[str, Any]:
    return {
        "type": "bar",
        "labels": _labels(period, formats),
        "series": [
            {"label": "Links created", "data": figures["by_day"]["links"], "color": PALETTE[3]},
            {"label": "Paid", "data": figures["by_day"]["paid"], "color": PALETTE[1]},
        ],
    }


def rto_chart(payment_types: list[dict[str, Any]]) -> dict[str, Any]:
    """RTO rate per payment type (a type none of whose parcels reached an end has none)."""
    return {
        "type": "bar",
        "horizontal": True,
        "percent": True,
        "labels": [
            PAYMENT_TYPE_NAMES.get(t["payment_type"], t["payment_type"]) for t in payment_types
        ],
        "series": [
            {
                "label": "RTO rate",
                "data": [t["rto_rate"] for t in payment_types],
                "color": PALETTE[2],
            }
        ],
    }
