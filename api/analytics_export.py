"""What every analytics endpoint shares: the ``from``/``to`` query parameters and the CSV
export of the same figures (``Accept: text/csv``).

An endpoint builds its figures once; ``answer`` sends them as JSON (the response model) or,
when the client asks for CSV, as the flat rows the endpoint derives from them, one header
line and one line per row, so a spreadsheet gets exactly the numbers the JSON carries.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterable, Mapping
from datetime import date
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel

from api.deps import SettingsDep
from services.analytics.period import Period, period, shop_zone

CSV = "text/csv"
M = TypeVar("M", bound=BaseModel)


def _period(
    settings: SettingsDep,
    start: Annotated[
        date | None,
        Query(
            alias="from",
            description="First day, included (shop's time zone); default: 29 days before `to`",
        ),
    ] = None,
    end: Annotated[
        date | None,
        Query(alias="to", description="Last day, included (shop's time zone); default: today"),
    ] = None,
) -> Period:
    return period(start, end, shop_zone(settings))


PeriodDep = Annotated[Period, Depends(_period)]


def wants_csv(request: Request) -> bool:
    accept = request.headers.get("accept", "")
    return any(part.split(";")[0].strip().lower() == CSV for part in accept.split(","))


def csv_text(rows: Iterable[Mapping[str, Any]]) -> str:
    """Rows as CSV: the columns are every key in the order first seen; a missing value is
    an empty cell, None too."""
    rows = list(rows)
    columns: dict[str, None] = {}
    for row in rows:
        columns.update(dict.fromkeys(row))
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(columns), lineterminator="\r\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if v is None else v for k, v in row.items()})
    return out.getvalue()


def answer(
    request: Request, figures: M, rows: Callable[[M], Iterable[Mapping[str, Any]]], name: str
) -> M | Response:
    """``figures`` as JSON, or as CSV rows when the client accepts ``text/csv``."""
    if not wants_csv(request):
        return figures
    return Response(
        csv_text(rows(figures)),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{name}.csv"'},
    )
