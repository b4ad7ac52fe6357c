"""The response models of rule analytics (``api/analytics.py``), and their CSV rows."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

Money = dict[str, str]


class ChannelCounts(BaseModel):
    """The six counts the endpoint has always answered with, per channel."""

    sent: int
    delivered: int
    opened: int
    clicked: int
    bounced: int
    failed: int


class MessageCounts(ChannelCounts):
    suppressed: dict[str, int] = Field(
        description="Never sent, by reason: consent, no_channel, frequency_cap (skipped), "
        "abandoned (the journey ended while the message was held)"
    )
    deferred: dict[str, int] = Field(
        description="Held at least once, by reason: quiet_hours, frequency_cap"
    )
    unsubscribes: int = Field(description="Unsubscribes through these messages")
    complaints: int = Field(description="Spam complaints about these messages")


class Figures(MessageCounts):
    """Messages (totals), what they cost and what came of them."""

    customers: MessageCounts = Field(description="The same counts as unique customers")
    recipients: int = Field(description="Unique customers sent a message")
    conversions: int = Field(description="Attributed orders")
    converted_customers: int
    conversion_rate: float | None = Field(
        description="conversions / entered journeys (a variant, version, rule); "
        "conversions / recipients (a step or channel)"
    )
    revenue: Money = Field(description="Attributed revenue per currency")
    revenue_per_recipient: Money
    discount_cost: Money = Field(description="Discounts on attributed orders")
    message_cost: Money = Field(description="Messages sent times SUTRA_MESSAGE_COSTS")
    roi: dict[str, float | None] = Field(
        description="(revenue - discount - cost) / cost per currency; null without a cost"
    )


class Journeys(BaseModel):
    entered: int
    entered_customers: int
    exited: dict[str, int] = Field(description="Journeys ended, by reason")
    exited_customers: dict[str, int]


class StepAnalytics(BaseModel):
    step: str | None = Field(description="The step's path in the rule, as messages record it")
    totals: Figures
    channels: dict[str, Figures] = Field(description='Per channel; "none": no channel took it')


class VariantAnalytics(Journeys):
    variant: str | None = Field(description="null: journeys that have not reached a split")
    messages: dict[str, ChannelCounts] = Field(description="Per channel")
    conversions: int
    conversion_rate: float | None = Field(description="conversions / entered")
    revenue: Money = Field(description="Attributed revenue per currency")
    discount_cost: Money = Field(description="Discounts on attributed orders")
    totals: Figures
    channels: dict[str, Figures]
    steps: list[StepAnalytics]


class VersionAnalytics(Journeys):
    version: int
    totals: Figures
    variants: list[VariantAnalytics]


class ExperimentVariant(BaseModel):
    name: str
    journeys: int
    conversions: int
    conversion_rate: float
    revenue: dict[str, str]
    p_value: float | None = Field(description="Best variant vs this one; two-sided z-test")


class ExperimentAnalytics(BaseModel):
    version: int
    path: str = Field(description="The split step, e.g. '0'")
    weights: dict[str, int]
    status: str = Field(description="running | decided (a decision is final)")
    winner: str | None
    promoted: bool = Field(description="Every later journey is sent to the winner")
    decided_at: datetime | None
    decision: dict[str, Any] | None = Field(description="The figures it was decided on")
    confidence: float
    min_sample: int
    best: str | None = Field(description="The variant converting best now")
    sampled: bool = Field(description="Every variant has min_sample journeys")
    verdict: str
    variants: list[ExperimentVariant]


class Period(BaseModel):
    from_: str = Field(alias="from", serialization_alias="from")
    to: str
    time_zone: str


class RuleAnalytics(Journeys):
    rule_id: str
    name: str
    basis: str = Field(
        description="send: by the day messages were sent; event: by the day each figure happened"
    )
    period: Period
    totals: Figures
    versions: list[VersionAnalytics]
    experiments: list[ExperimentAnalytics] = Field(description="Over all time, not the period")


class RuleSummary(BaseModel):
    rule_id: str
    name: str
    status: str
    version: int
    entered: int
    sent: int
    conversions: int
    conversion_rate: float | None = Field(description="conversions / entered")
    revenue: Money
    discount_cost: Money
    message_cost: Money
    roi: dict[str, float | None]


class RuleList(BaseModel):
    basis: str
    period: Period
    rules: list[RuleSummary]


# CSV ------------------------------------------------------------------------------------

_MONEY = ("revenue", "revenue_per_recipient", "discount_cost", "message_cost", "roi")


def _flat(figures: Figures, currencies: list[str]) -> dict[str, Any]:
    row: dict[str, Any] = {}
    for prefix, counts in (("", figures), ("customers_", figures.customers)):
        for name in ChannelCounts.model_fields:
            row[f"{prefix}{name}"] = getattr(counts, name)
        for part in ("suppressed", "deferred"):
            for reason, n in getattr(counts, part).items():
                row[f"{prefix}{part}_{reason}"] = n
        row[f"{prefix}unsubscribes"] = counts.unsubscribes
        row[f"{prefix}complaints"] = counts.complaints
    row["recipients"] = figures.recipients
    row["conversions"] = figures.conversions
    row["converted_customers"] = figures.converted_customers
    row["conversion_rate"] = figures.conversion_rate
    for name in _MONEY:
        values = getattr(figures, name)
        for currency in currencies:
            row[f"{name}_{currency}"] = values.get(currency)
    return row


def _currencies(figures: Figures) -> list[str]:
    return sorted({c for name in _MONEY for c in getattr(figures, name)})


def rule_rows(found: RuleAnalytics) -> Iterator[dict[str, Any]]:
    """One row per version, variant, step and channel (``level`` "step"), and one per
    variant with its journeys and totals (``level`` "variant", no step or channel): sum
    either kind of row, never both."""
    currencies = _currencies(found.totals)
    reasons = sorted(found.exited)
    for version in found.versions:
        for variant in version.variants:
            head = {"rule_id": found.rule_id, "version": version.version}
            head["variant"] = variant.variant
            yield {
                **head,
                "level": "variant",
                "step": None,
                "channel": None,
                "entered": variant.entered,
                "entered_customers": variant.entered_customers,
                **{f"exited_{r}": variant.exited.get(r, 0) for r in reasons},
                **{f"exited_customers_{r}": variant.exited_customers.get(r, 0) for r in reasons},
                **_flat(variant.totals, currencies),
            }
            for step in variant.steps:
                for channel, figures in step.channels.items():
                    yield {
                        **head,
                        "level": "step",
                        "step": step.step,
                        "channel": channel,
                        **_flat(figures, currencies),
                    }


def list_rows(found: RuleList) -> Iterator[dict[str, Any]]:
    currencies = sorted(
        {
            c
            for r in found.rules
            for name in ("revenue", "message_cost", "roi")
            for c in getattr(r, name)
        }
    )
    for rule in found.rules:
        row = rule.model_dump(exclude={"revenue", "discount_cost", "message_cost", "roi"})
        for name in ("revenue", "discount_cost", "message_cost", "roi"):
            values = getattr(rule, name)
            for currency in currencies:
                row[f"{name}_{currency}"] = values.get(currency)
        yield row
