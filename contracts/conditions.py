"""The condition language of rules and segments: JSON, never eval.

    {"field": "cart.total", "op": "gte", "value": "5000"}
    {"all": [c, ...]}   {"any": [c, ...]}   {"not": c}

Fields are dotted paths into ``event``, ``cart`` and ``customer``; ``items[*]`` means any
item: ``{"field": "event.data.items[*].category", "op": "eq", "value": "apparel"}`` holds
when some item is apparel. A field that is absent compares false (except ``exists``).
Pure functions only: workflows evaluate conditions deterministically.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, model_validator

Op = Literal[
    "eq", "ne", "gt", "gte", "lt", "lte", "in", "not_in", "contains", "starts_with", "exists"
]
_PATH = re.compile(r"^[a-z][a-z0-9_]*(\[\*\])?(\.[a-z][a-z0-9_]*(\[\*\])?)*$")
_ORDERED: frozenset[str] = frozenset({"gt", "gte", "lt", "lte"})

# The fields conditions may read, and their kind. "*" ends a prefix open to any key.
KNOWN_FIELDS: dict[str, str] = {
    "event.type": "text",
    "event.occurred_at": "time",
    "cart.id": "text",
    "cart.currency": "text",
    "cart.total": "number",
    "cart.item_count": "number",
    "cart.line_count": "number",
    "cart.checkout_started": "bool",
    "cart.items[*].sku": "text",
    "cart.items[*].name": "text",
    "cart.items[*].category": "text",
    "cart.items[*].quantity": "number",
    "cart.items[*].unit_price": "number",
    "customer.id": "text",
    "customer.email": "text",
    "customer.phone": "text",
    "customer.locale": "text",
    "customer.timezone": "text",
    "customer.country": "text",
    "customer.currency": "text",
    "customer.city": "text",
    "customer.orders_count": "number",
    "customer.total_spent": "number",
    "customer.average_order_value": "number",
    "customer.coupon_usage_rate": "number",
    "customer.first_order_at": "time",
    "customer.last_order_at": "time",
    "customer.days_since_last_order": "number",
    "customer.first_seen_at": "time",
    "customer.preferred_channel": "text",
    # Ids of the segments the customer is in: {"op": "contains", "value": "seg_..."}.
    "customer.segments": "list",
    "customer.consent.email": "bool",
    "customer.consent.sms": "bool",
    "customer.consent.whatsapp": "bool",
    "customer.attributes.*": "any",
    "event.data.*": "any",
}


class Compare(BaseModel):
    model_config = ConfigDict(extra="forbid")

    field: str = Field(examples=["cart.total"])
    op: Op
    value: Any = None

    @model_validator(mode="after")
    def _check(self) -> Compare:
        if not _PATH.match(self.field):
            raise ValueError(f"field {self.field!r} is not a dotted path like 'cart.total'")
        kind = field_kind(self.field)
        if kind is None:
            raise ValueError(
                f"unknown field {self.field!r}; known: {', '.join(sorted(KNOWN_FIELDS))}"
            )
        if self.op == "exists":
            return self
        if self.value is None:
            raise ValueError(f"op {self.op!r} needs a value")
        if kind == "list" and self.op != "contains":
            raise ValueError(f"{self.field} is a list: use contains (or exists)")
        if self.op in ("in", "not_in") and not isinstance(self.value, list):
            raise ValueError(f"op {self.op!r} needs a list value")
        if self.op in _ORDERED and kind in ("number",) and _number(self.value) is None:
            raise ValueError(f"{self.field} is a number: {self.value!r} cannot be compared to it")
        if self.op in _ORDERED and kind in ("text", "bool"):
            raise ValueError(f"{self.field} is not ordered: use eq, ne, in or contains")
        return self


class All(BaseModel):
    model_config = ConfigDict(extra="forbid")
    all: list[Condition] = Field(min_length=1)


class Any_(BaseModel):
    model_config = ConfigDict(extra="forbid")
    any: list[Condition] = Field(min_length=1)


class Not(BaseModel):
    model_config = ConfigDict(extra="forbid")
    not_: Condition = Field(alias="not")


def _kind_of(value: Any) -> str | None:
    if isinstance(value, dict):
        for key in ("all", "any", "not", "field"):
            if key in value:
                return key
    if isinstance(value, BaseModel):
        return {All: "all", Any_: "any", Not: "not", Compare: "field"}.get(type(value))
    return None


Condition = Annotated[
    Annotated[Compare, Tag("field")]
    | Annotated[All, Tag("all")]
    | Annotated[Any_, Tag("any")]
    | Annotated[Not, Tag("not")],
    Discriminator(
        _kind_of,
        custom_error_type="condition",
        custom_error_message='a condition is {"field", "op", "value"}, {"all": [...]}, '
        '{"any": [...]} or {"not": {...}}',
    ),
]

All.model_rebuild()
Any_.model_rebuild()
Not.model_rebuild()


def field_kind(path: str) -> str | None:
    if path in KNOWN_FIELDS:
        return KNOWN_FIELDS[path]
    for known, kind in KNOWN_FIELDS.items():
        if known.endswith(".*") and path.startswith(known[:-1]):
            return kind
    return None


def _number(value: Any) -> Decimal | None:
    if isinstance(value, bool):
        return None
    try:
        number = Decimal(str(value))
    except (InvalidOperation, ValueError):
        return None
    # "NaN" is text, not a number: Decimal NaN cannot be ordered (it raises).
    return None if number.is_nan() else number


def resolve(context: dict[str, Any], path: str) -> list[Any]:
    """Every value at ``path``; empty when absent. ``[*]`` fans out over lists."""
    values: list[Any] = [context]
    for part in path.split("."):
        many = part.endswith("[*]")
        key = part[:-3] if many else part
        nxt: list[Any] = []
        for value in values:
            if isinstance(value, dict) and key in value:
                found = value[key]
                if many:
                    nxt.extend(found if isinstance(found, list) else [])
                else:
                    nxt.append(found)
        values = nxt
    return [v for v in values if v is not None]


def _compare(op: str, left: Any, right: Any) -> bool:
    if op in ("in", "not_in"):
        hit = any(_equal(left, r) for r in right)
        return hit if op == "in" else not hit
    if op == "eq":
        return _equal(left, right)
    if op == "ne":
        return not _equal(left, right)
    if op == "contains":
        if isinstance(left, list):
            return any(_equal(item, right) for item in left)
        return isinstance(left, str) and str(right).lower() in left.lower()
    if op == "starts_with":
        return isinstance(left, str) and left.lower().startswith(str(right).lower())
    x: Any = _number(left)
    y: Any = _number(right)
    if x is None or y is None:
        x, y = str(left), str(right)  # ISO timestamps order as text
    return {"gt": x > y, "gte": x >= y, "lt": x < y, "lte": x <= y}[op]


def _equal(left: Any, right: Any) -> bool:
    a, b = _number(left), _number(right)
    if a is not None and b is not None and not isinstance(left, str | bool):
        return a == b
    if isinstance(left, str) and isinstance(right, str):
        return left.casefold() == right.casefold()
    if isinstance(left, str) and _number(right) is not None and _number(left) is not None:
        return _number(left) == _number(right)
    return bool(left == right)


def evaluate(condition: Any, context: dict[str, Any], *, numeric_equality: bool = True) -> bool:
    """Whether the condition holds for ``{"event", "cart", "customer"}``.

    ``numeric_equality=False`` is the first release's rule, kept for journeys that branched
    before it changed (``eq`` on a number field compared the text: "4500.00" != "4500"):
    their replay must take the branches they took."""
    if condition is None:
        return True
    if isinstance(condition, All):
        return all(evaluate(c, context, numeric_equality=numeric_equality) for c in condition.all)
    if isinstance(condition, Any_):
        return any(evaluate(c, context, numeric_equality=numeric_equality) for c in condition.any)
    if isinstance(condition, Not):
        return not evaluate(condition.not_, context, numeric_equality=numeric_equality)
    assert isinstance(condition, Compare)
    values = resolve(context, condition.field)
    if condition.op == "exists":
        return bool(values) == (condition.value is not False)
    if not values:
        return condition.op in ("ne", "not_in")
    if (
        numeric_equality
        and condition.op in ("eq", "ne", "in", "not_in")
        and field_kind(condition.field) == "number"
    ):
        # Amounts arrive as decimal strings: "4500.00" equals "4500" (as gte and lte agree).
        values = [n if (n := _number(v)) is not None else v for v in values]
    if condition.op in ("ne", "not_in"):
        return all(_compare(condition.op, v, condition.value) for v in values)
    return any(_compare(condition.op, v, condition.value) for v in values)


def fields_of(condition: Any) -> Iterable[str]:
    if isinstance(condition, All):
        for c in condition.all:
            yield from fields_of(c)
    elif isinstance(condition, Any_):
        for c in condition.any:
            yield from fields_of(c)
    elif isinstance(condition, Not):
        yield from fields_of(condition.not_)
    elif isinstance(condition, Compare):
        yield condition.field
