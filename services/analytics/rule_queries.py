"""The SQL behind rule analytics: one grouped query per table, over one or more rules and a
period, every figure both as a total and as unique customers.

Message figures are grouped with ``GROUPING SETS`` at every level a report shows (step and
channel, step, variant and channel, variant, version, rule), so the unique customers of a
variant are counted once even when they got both of its steps. ``Level`` names each set.

``basis`` picks which date puts a row in the period:

- ``send``: the day a message was sent (or, for one that never went out, the day the journey
  asked for it), and all that later came of it: its opens, clicks, bounces, unsubscribes,
  complaints and orders, whenever they happened. Journeys by the day they entered, with
  their exits whenever they came. A cohort reading: what the messages of March earned.
- ``event``: each figure by the day it happened: sent by ``sent_at``, delivered, opened,
  clicked by theirs, bounced and failed by ``failed_at``, suppressed by the moment it was
  suppressed, held (deferred) by the day it was first held, unsubscribes and complaints by
  theirs, entries by ``entered_at``, exits by ``exited_at``, orders by the order date.

Test runs of a rule (``POST /v1/rules/{id}/test``) are left out: they are the marketer's
own rehearsals, not customers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from enum import IntEnum
from typing import Any, Literal

from sqlalchemy import (
    ColumnElement,
    Select,
    and_,
    func,
    literal,
    literal_column,
    select,
    true,
    tuple_,
    union_all,
)
from sqlalchemy.ext.asyncio import AsyncSession

from db.models import Attribution, Message, MessageEvent, Suppression
from services.analytics.period import Period
from services.journeys import experiments

Basis = Literal["send", "event"]
STATUSES = ("sent", "delivered", "opened", "clicked", "bounced", "failed")
SUPPRESSED = ("consent", "no_channel", "frequency_cap", "abandoned")
DEFERRED = ("quiet_hours", "frequency_cap")
UNSUBSCRIBE_REASONS = ("unsubscribe", "group_unsubscribe")
NO_CHANNEL = "none"  # the channel key of messages no channel could take


class Level(IntEnum):
    """``GROUPING(version, variant, step, channel)``: a set bit is a column rolled up."""

    STEP_CHANNEL = 0b0000
    STEP = 0b0001
    VARIANT_CHANNEL = 0b0010
    VARIANT = 0b0011
    VERSION = 0b0111
    RULE = 0b1111


# (rule, level, version, variant, step, channel); rolled-up columns are None.
Key = tuple[str, Level, int | None, str | None, str | None, str | None]


@dataclass(frozen=True)
class Scope:
    rule_ids: Sequence[str]
    period: Period
    basis: Basis

    @property
    def start(self) -> datetime:
        return self.period.start_utc

    @property
    def end(self) -> datetime:
        return self.period.end_utc

    def within(self, column: Any) -> ColumnElement[bool]:
        return and_(column >= self.start, column < self.end)


def sent_day() -> Any:
    return func.coalesce(Message.sent_at, Message.created_at)


def _last_event() -> Any:
    return func.greatest(
        Message.created_at,
        Message.updated_at,
        Message.sent_at,
        Message.delivered_at,
        Message.opened_at,
        Message.clicked_at,
        Message.failed_at,
    )


def messages_in(scope: Scope) -> ColumnElement[bool]:
    """The rule's messages the period can hold a figure of (matches the two indexes)."""
    if scope.basis == "send":
        return and_(Message.rule_id.in_(scope.rule_ids), scope.within(sent_day()))
    return and_(
        Message.rule_id.in_(scope.rule_ids),
        _last_event() >= scope.start,
        Message.created_at < scope.end,
    )


def not_a_test() -> ColumnElement[bool]:
    return experiments.not_a_test(Message.rule_id, Message.workflow_id)  # type: ignore[arg-type]


# Grouped expressions are spelled as SQL text, not with bound literals: PostgreSQL matches
# a selected expression to its GROUP BY by its text, and two binds of 'none' differ.
def _variant() -> Any:
    return literal_column("(messages.details ->> 'variant')")


def _channel() -> Any:
    return func.coalesce(Message.channel, literal_column(f"'{NO_CHANNEL}'"))


def _grouped(*columns: Any) -> Any:
    rule, version, variant, step, channel = columns
    return func.grouping_sets(
        tuple_(rule, version, variant, step, channel),
        tuple_(rule, version, variant, step),
        tuple_(rule, version, variant, channel),
        tuple_(rule, version, variant),
        tuple_(rule, version),
        tuple_(rule),
    )


def _message_conditions(scope: Scope) -> dict[str, ColumnElement[bool]]:
    """Each figure's condition on one ledger row."""
    event = scope.basis == "event"
    stamps = {
        "sent": Message.sent_at,
        "delivered": Message.delivered_at,
        "opened": Message.opened_at,
        "clicked": Message.clicked_at,
    }
    out: dict[str, ColumnElement[bool]] = {
        name: scope.within(stamp) if event else stamp.is_not(None) for name, stamp in stamps.items()
    }
    for status in ("bounced", "failed"):
        out[status] = and_(
            Message.status == status, *([scope.within(Message.failed_at)] if event else [])
        )
    code = func.coalesce(Message.details["suppressed"].astext, "no_channel")
    for reason in SUPPRESSED:
        matches = code == reason
        if reason == "no_channel":
            matches = ~code.in_([r for r in SUPPRESSED if r != reason])
        out[f"suppressed.{reason}"] = and_(
            Message.status == "suppressed",
            matches,
            *([scope.within(Message.updated_at)] if event else []),
        )
    for reason in DEFERRED:
        held = Message.details["deferrals"].op("@>")(
            literal_column(f"""'[{{"reason": "{reason}"}}]'::jsonb""")
        )
        out[f"deferred.{reason}"] = and_(
            held, *([scope.within(Message.created_at)] if event else [])
        )
    return out


def _key(rule: str, level: int, version: Any, variant: Any, step: Any, channel: Any) -> Key:
    return (rule, Level(level), version, variant, step, channel)


async def messages(session: AsyncSession, scope: Scope) -> dict[Key, dict[str, int]]:
    """Per level: every message figure as ``name`` (total) and ``name:customers``."""
    conditions = _message_conditions(scope)
    columns = (Message.rule_id, Message.rule_version, _variant(), Message.step, _channel())
    figures = []
    for name, condition in conditions.items():
        figures.append(func.count().filter(condition).label(name))
        figures.append(
            func.count(func.distinct(Message.customer_id)).filter(condition).label(f"{name}:c")
        )
    level = func.grouping(*columns[1:])
    result = await session.execute(
        select(*columns, level, *figures)
        .where(messages_in(scope), not_a_test())
        .group_by(_grouped(*columns))
    )
    return {
        _key(rule, lvl, version, variant, step, channel): dict(
            zip(_names(conditions), rest, strict=True)
        )
        for rule, version, variant, step, channel, lvl, *rest in result.all()
    }


def _names(conditions: dict[str, Any]) -> list[str]:
    return [n for name in conditions for n in (name, f"{name}:customers")]


async def reactions(session: AsyncSession, scope: Scope) -> dict[Key, dict[str, int]]:
    """Unsubscribes (through a message's link or its provider's report) and spam complaints
    caused by the rule's messages, per level, as totals and unique customers."""
    event = scope.basis == "event"
    unsubscribes = select(
        literal("unsubscribes").label("kind"), Suppression.message_id.label("message_id")
    ).where(
        Suppression.message_id.is_not(None),
        Suppression.reason.in_(UNSUBSCRIBE_REASONS),
        *([scope.within(Suppression.created_at)] if event else []),
    )
    complaints = select(
        literal("complaints").label("kind"), MessageEvent.message_id.label("message_id")
    ).where(
        MessageEvent.status == "spamreport",
        MessageEvent.message_id.is_not(None),
        *([scope.within(MessageEvent.occurred_at)] if event else []),
    )
    caused = union_all(unsubscribes, complaints).subquery()
    columns = (Message.rule_id, Message.rule_version, _variant(), Message.step, _channel())
    where = [Message.rule_id.in_(scope.rule_ids), not_a_test()]
    if not event:
        where.append(scope.within(sent_day()))
    figures = []
    for kind in ("unsubscribes", "complaints"):
        figures.append(func.count().filter(caused.c.kind == kind))
        figures.append(func.count(func.distinct(Message.customer_id)).filter(caused.c.kind == kind))
    result = await session.execute(
        select(*columns, func.grouping(*columns[1:]), *figures)
        .select_from(caused)
        .join(Message, Message.id == caused.c.message_id)
        .where(*where)
        .group_by(_grouped(*columns))
    )
    names = ["unsubscribes", "unsubscribes:customers", "complaints", "complaints:customers"]
    return {
        _key(rule, lvl, version, variant, step, channel): dict(zip(names, rest, strict=True))
        for rule, version, variant, step, channel, lvl, *rest in result.all()
    }


@dataclass
class Orders:
    conversions: int = 0
    customers: int = 0
    revenue: dict[str, Decimal] | None = None
    discount: dict[str, Decimal] | None = None


def attributed(scope: Scope) -> Select[Any]:
    """The orders credited to the rule's messages in the period (an attribution naming no
    message, a held-out customer's order say, is no conversion of a message).

    By send date: the messages sent in the period, read from ``ix_messages_rule_sent_at``
    alone, joined to their orders (a credited message was always sent). By event date: the
    orders placed in the period (``ix_attributions_rule_ordered_at``), each with its message
    looked up by key; ``OFFSET 0`` keeps that a probe per order, where PostgreSQL would
    rather read the whole ledger to hash it."""
    if scope.basis == "send":
        credited: Any = (
            select(Message.id, Message.workflow_id)
            .where(
                Message.rule_id.in_(scope.rule_ids),
                Message.sent_at.is_not(None),
                scope.within(Message.sent_at),
            )
            .subquery("credited")
        )
        joined = Attribution.__table__.join(credited, credited.c.id == Attribution.message_id)
        when = Attribution.ordered_at >= scope.start  # never before the message it credits
    else:
        credited = (
            select(Message.workflow_id)
            .where(Message.id == Attribution.message_id)
            .offset(0)
            .lateral("credited")
        )
        joined = Attribution.__table__.join(credited, true())
        when = scope.within(Attribution.ordered_at)
    return (
        select()
        .select_from(joined)
        .where(
            Attribution.rule_id.in_(scope.rule_ids),
            Attribution.rule_version.is_not(None),
            experiments.not_a_test(Attribution.rule_id, credited.c.workflow_id),  # type: ignore[arg-type]
            when,
        )
    )


async def conversions(session: AsyncSession, scope: Scope) -> dict[Key, Orders]:
    """Attributed orders per level: counts over every currency, money per currency."""
    channel = func.coalesce(Attribution.channel, literal_column(f"'{NO_CHANNEL}'"))
    columns = (
        Attribution.rule_id,
        Attribution.rule_version,
        Attribution.variant,
        Attribution.step,
        channel,
    )
    base = attributed(scope)
    counted = await session.execute(
        base.add_columns(
            *columns,
            func.grouping(*columns[1:]),
            func.count(),
            func.count(func.distinct(Attribution.customer_id)),
        ).group_by(_grouped(*columns))
    )
    found: dict[Key, Orders] = {}
    for rule, version, variant, step, ch, lvl, count, customers in counted.all():
        found[_key(rule, lvl, version, variant, step, ch)] = Orders(count, customers, {}, {})
    money = await session.execute(
        base.add_columns(
            *columns,
            func.grouping(*columns[1:]),
            Attribution.currency,
            func.sum(Attribution.revenue),
            func.sum(Attribution.discount),
        ).group_by(
            func.grouping_sets(*(tuple_(*cols, Attribution.currency) for cols in _levels(columns)))
        )
    )
    for rule, version, variant, step, ch, lvl, currency, revenue, discount in money.all():
        orders = found[_key(rule, lvl, version, variant, step, ch)]
        assert orders.revenue is not None
        assert orders.discount is not None
        orders.revenue[currency] = revenue
        orders.discount[currency] = discount
    return found


def _levels(columns: Sequence[Any]) -> list[tuple[Any, ...]]:
    rule, version, variant, step, channel = columns
    return [
        (rule, version, variant, step, channel),
        (rule, version, variant, step),
        (rule, version, variant, channel),
        (rule, version, variant),
        (rule, version),
        (rule,),
    ]
