"""Workflow ids are built from domain ids here and nowhere else."""


def cart(cart_id: str) -> str:
    return f"cart/{cart_id}"


def order(order_id: str) -> str:
    return f"order/{order_id}"


def journey(rule_id: str, customer_id: str, key: str | None = None) -> str:
    base = f"journey/{rule_id}/{customer_id}"
    return f"{base}/{key}" if key else base


def fanout(event_id: str) -> str:
    return f"fanout/{event_id}"
