"""Sutra's custom search attributes: how ops find a journey in the Temporal UI.

Every place that registers them (the worker at start-up, ``make run``'s dev server, the
test servers) reads ``ALL`` and ``registration()`` from here; README "Operating it" lists
the ready-made queries over them.
"""

from typing import Any

from temporalio.api.enums.v1 import IndexedValueType
from temporalio.common import SearchAttributeIndexedValueType, SearchAttributeKey

CUSTOMER_ID = SearchAttributeKey.for_keyword("CustomerId")
CART_ID = SearchAttributeKey.for_keyword("CartId")
ORDER_ID = SearchAttributeKey.for_keyword("OrderId")
RULE_ID = SearchAttributeKey.for_keyword("RuleId")
# The pinned rule version of a journey: `RuleId = "r_1" AND RuleVersion = 2`.
RULE_VERSION = SearchAttributeKey.for_int("RuleVersion")
JOURNEY_STATUS = SearchAttributeKey.for_keyword("JourneyStatus")
# An order's payment_type (prepaid, cod, partial_cod) and payment_status (pending,
# partially_paid, fully_paid, failed, refunded), kept current as they change.
PAYMENT_TYPE = SearchAttributeKey.for_keyword("PaymentType")
PAYMENT_STATUS = SearchAttributeKey.for_keyword("PaymentStatus")
# "true" once a confirmed order has waited too long to ship: `SlaBreached = "true"` in the UI.
SLA_BREACHED = SearchAttributeKey.for_keyword("SlaBreached")

ALL: tuple[SearchAttributeKey[Any], ...] = (
    CUSTOMER_ID,
    CART_ID,
    ORDER_ID,
    RULE_ID,
    RULE_VERSION,
    JOURNEY_STATUS,
    PAYMENT_TYPE,
    PAYMENT_STATUS,
    SLA_BREACHED,
)

_CLI_TYPES = {
    SearchAttributeIndexedValueType.KEYWORD: "Keyword",
    SearchAttributeIndexedValueType.INT: "Int",
}


def registration() -> dict[str, "IndexedValueType.ValueType"]:
    """``name -> indexed type``, as ``operator_service.add_search_attributes`` takes it."""
    return {key.name: IndexedValueType.ValueType(key.indexed_value_type.value) for key in ALL}


def dev_server_args() -> list[str]:
    """``--search-attribute Name=Type`` pairs for ``temporal server start-dev``."""
    args: list[str] = []
    for key in ALL:
        args += ["--search-attribute", f"{key.name}={_CLI_TYPES[key.indexed_value_type]}"]
    return args


def equals(key: SearchAttributeKey[str], value: str) -> str:
    """A visibility query clause, safely quoted."""
    quoted = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'{key.name} = "{quoted}"'
