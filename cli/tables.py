"""How each answer reads in a terminal: rich tables over the API's JSON."""

from __future__ import annotations

from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table


def _text(value: Any) -> str:
    if value is None or value == "":
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, dict):
        return ", ".join(f"{k} {_text(v)}" for k, v in value.items()) or "-"
    if isinstance(value, list):
        return ", ".join(_text(v) for v in value) or "-"
    return str(value)


def _table(title: str | None, columns: list[str]) -> Table:
    table = Table(title=title, box=box.SIMPLE_HEAD, title_justify="left", header_style="bold")
    for column in columns:
        table.add_column(column, overflow="fold")
    return table


def _rows(console: Console, title: str, columns: list[str], rows: list[list[Any]]) -> None:
    if not rows:
        console.print(f"{title}: none")
        return
    table = _table(title, columns)
    for row in rows:
        table.add_row(*(_text(v) for v in row))
    console.print(table)


def _pairs(console: Console, title: str, pairs: list[tuple[str, Any]]) -> None:
    table = Table(title=title, box=None, show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    for key, value in pairs:
        table.add_row(key, _text(value))
    console.print(table)


def _money(amount: Any, currency: Any) -> str:
    return "-" if amount is None else f"{amount} {currency or ''}".strip()


def order(console: Console, data: dict[str, Any]) -> None:
    currency = data.get("currency")
    _pairs(
        console,
        f"Order {data.get('order_id')}",
        [
            ("status", data.get("status")),
            ("payment", f"{_text(data.get('payment_type'))} / {_text(data.get('payment_status'))}"),
            ("total", _money(data.get("total"), currency)),
            ("paid", _money(data.get("paid_amount"), currency)),
            ("remaining", _money(data.get("remaining_amount"), currency)),
            ("payment link", data.get("payment_link")),
            ("customer", data.get("customer_id")),
            ("cart", data.get("cart_id")),
            ("tracking", data.get("tracking_url")),
            ("carrier", data.get("carrier")),
            ("on hold", data.get("on_hold")),
            ("SLA breached", data.get("sla_breached")),
            ("cancel reason", data.get("cancel_reason")),
            ("RTO reason", data.get("rto_reason")),
        ],
    )
    _rows(
        console,
        "History",
        ["at", "status", "payment", "by", "note"],
        [
            [h.get("at"), h.get("status"), h.get("payment_status"), h.get("by"), h.get("note")]
            for h in data.get("history") or []
        ],
    )


_ROUTE_COLUMNS = ["seq", "workflow", "type", "kind", "status", "attempts", "last error / detail"]


def _route_rows(routes: list[dict[str, Any]]) -> list[list[Any]]:
    return [
        [
            r.get("seq"),
            r.get("workflow_id"),
            r.get("workflow_type"),
            r.get("kind") if r.get("origin") in (None, "event") else f"{r.get('kind')} (again)",
            r.get("status"),
            r.get("attempts"),
            r.get("last_error") or r.get("detail"),
        ]
        for r in routes
    ]


def event(console: Console, data: dict[str, Any]) -> None:
    _pairs(
        console,
        f"Event {data.get('id')}",
        [
            ("type", data.get("type")),
            ("occurred at", data.get("occurred_at")),
            ("received at", data.get("received_at")),
        ],
    )
    _rows(console, "Deliveries", _ROUTE_COLUMNS, _route_rows(data.get("routes") or []))


def redelivered(console: Console, data: dict[str, Any]) -> None:
    requeued = data.get("requeued") or []
    console.print(f"Event {data.get('event_id')}: {len(requeued)} delivery(ies) queued again")
    _rows(console, "Queued again", _ROUTE_COLUMNS, _route_rows(requeued))
    _rows(console, "Left as they are", _ROUTE_COLUMNS, _route_rows(data.get("left") or []))


def rules(console: Console, data: Any) -> None:
    listed = data if isinstance(data, list) else [data]
    _rows(
        console,
        "Rules",
        ["id", "name", "status", "version", "trigger", "updated"],
        [
            [
                r.get("id"),
                (r.get("definition") or {}).get("name"),
                r.get("status"),
                r.get("version"),
                ((r.get("definition") or {}).get("trigger") or {}).get("event"),
                r.get("updated_at"),
            ]
            for r in listed
        ],
    )


def rule_analytics(console: Console, data: dict[str, Any]) -> None:
    rows = []
    channels: list[list[Any]] = []
    for version in data.get("versions") or []:
        for variant in version.get("variants") or []:
            name = variant.get("variant") or "-"
            rate = variant.get("conversion_rate")
            rows.append(
                [
                    version.get("version"),
                    name,
                    variant.get("entered"),
                    variant.get("exited"),
                    variant.get("conversions"),
                    "-" if rate is None else f"{rate:.1%}",
                    variant.get("revenue"),
                    variant.get("discount_cost"),
                ]
            )
            for channel, counts in (variant.get("messages") or {}).items():
                channels.append([version.get("version"), name, channel, *counts.values()])
    _rows(
        console,
        f"Rule {data.get('rule_id')}",
        ["version", "variant", "entered", "exited", "conversions", "rate", "revenue", "discounts"],
        rows,
    )
    _rows(
        console,
        "Messages",
        [
            "version",
            "variant",
            "channel",
            "sent",
            "delivered",
            "opened",
            "clicked",
            "bounced",
            "failed",
        ],
        channels,
    )
    _rows(
        console,
        "A/B tests",
        ["version", "split", "status", "best", "winner", "verdict"],
        [
            [
                e.get("version"),
                e.get("path"),
                e.get("status"),
                e.get("best"),
                e.get("winner"),
                e.get("verdict"),
            ]
            for e in data.get("experiments") or []
        ],
    )


def messages(console: Console, data: dict[str, Any]) -> None:
    _rows(
        console,
        "Messages",
        ["created", "customer", "channel", "template", "status", "reason", "rule", "to"],
        [
            [
                m.get("created_at"),
                m.get("customer_id"),
                m.get("channel"),
                m.get("template"),
                m.get("status"),
                m.get("reason"),
                m.get("rule_id"),
                m.get("to"),
            ]
            for m in data.get("messages") or []
        ],
    )
    if data.get("next_cursor"):
        console.print(f"more: older messages follow (cursor {data['next_cursor']})")


def stranded(console: Console, data: dict[str, Any]) -> None:
    console.print(
        f"{data.get('count', 0)} stranded workflow(s) on task queue {data.get('task_queue')}"
    )
    _rows(
        console,
        "Stranded",
        ["workflow", "type", "since", "attempts", "cause", "message", "Temporal UI"],
        [
            [
                w.get("workflow_id"),
                w.get("workflow_type"),
                w.get("since"),
                w.get("attempts"),
                w.get("cause"),
                w.get("message"),
                w.get("temporal_ui_url"),
            ]
            for w in data.get("workflows") or []
        ],
    )


def journeys(console: Console, data: Any) -> None:
    listed = data.get("journeys", []) if isinstance(data, dict) else data
    rows = []
    for j in listed:
        # The rule flat on the journey, or nested under "rule" as earlier versions answer.
        rule = j.get("rule") or {}
        rows.append(
            [
                j.get("workflow_id"),
                j.get("workflow_type"),
                j.get("rule_id") or rule.get("rule_id"),
                j.get("rule_version") or rule.get("rule_version"),
                j.get("status"),
                j.get("journey_status"),
                j.get("started_at"),
                j.get("closed_at"),
                j.get("temporal_ui_url"),
            ]
        )
    _rows(
        console,
        "Journeys",
        [
            "workflow",
            "type",
            "rule",
            "version",
            "status",
            "journey",
            "started",
            "closed",
            "Temporal UI",
        ],
        rows,
    )
