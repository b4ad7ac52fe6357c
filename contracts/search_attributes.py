"""Sutra's custom search attributes: how ops find a journey in the Temporal UI."""

from temporalio.common import SearchAttributeKey

CUSTOMER_ID = SearchAttributeKey.for_keyword("CustomerId")
CART_ID = SearchAttributeKey.for_keyword("CartId")
ORDER_ID = SearchAttributeKey.for_keyword("OrderId")
RULE_ID = SearchAttributeKey.for_keyword("RuleId")
JOURNEY_STATUS = SearchAttributeKey.for_keyword("JourneyStatus")
# "true" once a confirmed order has waited too long to ship: `SlaBreached = "true"` in the UI.
SLA_BREACHED = SearchAttributeKey.for_keyword("SlaBreached")

ALL: tuple[SearchAttributeKey[str], ...] = (
    CUSTOMER_ID,
    CART_ID,
    ORDER_ID,
    RULE_ID,
    JOURNEY_STATUS,
    SLA_BREACHED,
)


def dev_server_args() -> list[str]:
    """``--search-attribute Name=Type`` pairs for ``temporal server start-dev``."""
    args: list[str] = []
    for key in ALL:
        args += ["--search-attribute", f"{key.name}=Keyword"]
    return args


def equals(key: SearchAttributeKey[str], value: str) -> str:
    """A visibility query clause, safely quoted."""
    quoted = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'{key.name} = "{quoted}"'
