"""The ``sutra`` command: ``sutra --help``. Each command is one API call; ``--json`` prints
the API's JSON as it came (for scripts), otherwise a readable table."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from datetime import date
from typing import Annotated, Any
from urllib.parse import quote

import typer
from rich.console import Console

from cli import tables
from cli.client import DEFAULT_URL, Api, CliError, default_key

app = typer.Typer(
    name="sutra",
    help="Sutra from the command line, over its HTTP API (SUTRA_API_URL, SUTRA_API_KEY).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
orders = typer.Typer(help="Orders: live state and moves.", no_args_is_help=True)
events = typer.Typer(help="Received events and their delivery to workflows.", no_args_is_help=True)
rules = typer.Typer(help="Rules: list, pause, activate.", no_args_is_help=True)
analytics = typer.Typer(help="What rules earned.", no_args_is_help=True)
app.add_typer(orders, name="orders")
app.add_typer(events, name="events")
app.add_typer(rules, name="rules")
app.add_typer(analytics, name="analytics")

Json = Annotated[bool, typer.Option("--json", help="Print the API's JSON instead of a table")]


def _segment(value: str) -> str:
    return quote(value, safe="")


def _api(ctx: typer.Context) -> Api:
    api: Api = ctx.obj
    return api


def _show(data: Any, as_json: bool, render: Callable[[Console, Any], None]) -> None:
    if as_json:
        sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
        return
    render(Console(soft_wrap=False), data)


def _run(ctx: typer.Context, call: Callable[[Api], Any]) -> Any:
    try:
        return call(_api(ctx))
    except CliError as exc:
        Console(stderr=True).print(f"[bold red]error[/]: {exc.message}", highlight=False)
        raise typer.Exit(exc.exit_code) from None


@app.callback()
def main(
    ctx: typer.Context,
    api_url: Annotated[
        str, typer.Option(envvar="SUTRA_API_URL", help="Where Sutra's API listens")
    ] = DEFAULT_URL,
    api_key: Annotated[
        str | None,
        typer.Option(
            envvar="SUTRA_API_KEY",
            help="API key (default: var/admin-key, as `make run` writes it)",
            show_default=False,
        ),
    ] = None,
) -> None:
    ctx.obj = Api(url=api_url, key=api_key or default_key())


@orders.command("show")
def orders_show(ctx: typer.Context, order_id: str, as_json: Json = False) -> None:
    """An order's live state, from its workflow."""
    data = _run(ctx, lambda api: api.request("GET", f"/v1/orders/{_segment(order_id)}"))
    _show(data, as_json, tables.order)


@orders.command("move")
def orders_move(
    ctx: typer.Context,
    order_id: str,
    to: Annotated[str, typer.Option("--to", help="shipped, delivered, cancelled, rto, …")],
    tracking_url: Annotated[str | None, typer.Option(help="The parcel's tracking page")] = None,
    carrier: Annotated[str | None, typer.Option(help="Who carries it")] = None,
    reason: Annotated[str | None, typer.Option(help="Why (a cancellation, an RTO)")] = None,
    as_json: Json = False,
) -> None:
    """Move an order; an impossible move is refused with its current status."""
    body = {"to": to, "tracking_url": tracking_url, "carrier": carrier, "reason": reason}
    data = _run(
        ctx,
        lambda api: api.request(
            "POST",
            f"/v1/orders/{_segment(order_id)}/transitions",
            body={k: v for k, v in body.items() if v is not None},
        ),
    )
    _show(data, as_json, tables.order)


@events.command("show")
def events_show(ctx: typer.Context, event_id: str, as_json: Json = False) -> None:
    """A stored event and where it was delivered."""
    data = _run(ctx, lambda api: api.request("GET", f"/v1/events/{_segment(event_id)}"))
    _show(data, as_json, tables.event)


@events.command("redeliver")
def events_redeliver(ctx: typer.Context, event_id: str, as_json: Json = False) -> None:
    """Hand an event to the workflows it reached no running one of, again."""
    path = f"/v1/events/{_segment(event_id)}/redeliver"
    data = _run(ctx, lambda api: api.request("POST", path))
    _show(data, as_json, tables.redelivered)


@rules.command("list")
def rules_list(ctx: typer.Context, as_json: Json = False) -> None:
    """Every rule with its status and current version."""
    data = _run(ctx, lambda api: api.request("GET", "/v1/rules"))
    _show(data, as_json, tables.rules)


@rules.command("pause")
def rules_pause(
    ctx: typer.Context,
    rule_id: str,
    end: Annotated[
        bool, typer.Option("--end", help="End running journeys now instead of letting them finish")
    ] = False,
    as_json: Json = False,
) -> None:
    """Stop new entries; running journeys drain (or end, with --end)."""
    body = {"running": "end" if end else "drain"}
    path = f"/v1/rules/{_segment(rule_id)}/pause"
    data = _run(ctx, lambda api: api.request("POST", path, body=body))
    _show(data, as_json, tables.rules)


@rules.command("activate")
def rules_activate(ctx: typer.Context, rule_id: str, as_json: Json = False) -> None:
    """Let journeys enter the rule."""
    path = f"/v1/rules/{_segment(rule_id)}/activate"
    data = _run(ctx, lambda api: api.request("POST", path))
    _show(data, as_json, tables.rules)


@analytics.command("rule")
def analytics_rule(
    ctx: typer.Context,
    rule_id: str,
    since: Annotated[
        str | None, typer.Option("--from", help="First day (YYYY-MM-DD, the shop's time zone)")
    ] = None,
    until: Annotated[str | None, typer.Option("--to", help="Last day, included")] = None,
    as_json: Json = False,
) -> None:
    """A rule's figures per version and variant, and its A/B tests."""
    for name, value in (("--from", since), ("--to", until)):
        if value is not None:
            try:
                date.fromisoformat(value)
            except ValueError:
                raise typer.BadParameter(
                    f"{value!r} is not a date YYYY-MM-DD", param_hint=name
                ) from None
    path = f"/v1/analytics/rules/{_segment(rule_id)}"
    params = {"from": since, "to": until}
    data = _run(ctx, lambda api: api.request("GET", path, params=params))
    _show(data, as_json, tables.rule_analytics)


@app.command("messages")
def messages(
    ctx: typer.Context,
    customer: Annotated[str | None, typer.Option(help="Customer id")] = None,
    cart: Annotated[str | None, typer.Option(help="Cart id")] = None,
    order: Annotated[str | None, typer.Option(help="Order id")] = None,
    rule: Annotated[str | None, typer.Option(help="Rule id")] = None,
    status: Annotated[str | None, typer.Option(help="sent, delivered, failed, …")] = None,
    limit: Annotated[int, typer.Option(min=1, max=500, help="How many, newest first")] = 50,
    as_json: Json = False,
) -> None:
    """The message ledger, newest first."""
    params = {
        "customer_id": customer,
        "cart_id": cart,
        "order_id": order,
        "rule_id": rule,
        "status": status,
        "limit": limit,
    }
    data = _run(ctx, lambda api: api.request("GET", "/v1/messages", params=params))
    _show(data, as_json, tables.messages)


@app.command("stranded")
def stranded(
    ctx: typer.Context,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="How many to describe")] = 100,
    as_json: Json = False,
) -> None:
    """Workflows whose workflow tasks keep failing."""
    params = {"limit": limit}
    data = _run(ctx, lambda api: api.request("GET", "/v1/ops/stranded-workflows", params=params))
    _show(data, as_json, tables.stranded)


@app.command("journeys")
def journeys(
    ctx: typer.Context,
    customer: Annotated[str, typer.Option(help="Customer id")],
    as_json: Json = False,
) -> None:
    """A customer's journeys, running and past (GET /v1/customers/{id}/journeys)."""
    path = f"/v1/customers/{_segment(customer)}/journeys"
    data = _run(ctx, lambda api: api.request("GET", path))
    _show(data, as_json, tables.journeys)


def run() -> None:
    """The console script's entry point."""
    # Tables as wide as the terminal; piped output gets room for ids and dates.
    if not sys.stdout.isatty():
        os.environ.setdefault("COLUMNS", "160")
    app()
