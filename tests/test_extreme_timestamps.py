"""Extreme, malformed and skewed date-times in events, sent to the engine from outside
(issue 11).

The defect was found by fuzzing the running engine over HTTP: ``POST /v1/events/batch``
with ``occurred_at`` ``9999-12-31T23:59:59-01:00`` answered 500 (in UTC that is year
10000). So these tests start the API as production runs it (tests/outside.py) and talk to
it only over HTTP:

- every event type, alone and inside a batch, with date-times at the edges of what
  parses: the answer is 202, or 422 naming ``occurred_at`` (``events[i].occurred_at`` in
  a batch, whose other events are unaffected), and a refused event is not stored;
- schemathesis over every operation whose request holds a date-time, date, time or
  duration anywhere, fed only edge values (tests/datetimes.py): never a 5xx, errors in
  the documented shape.

tests/test_dated_inputs.py covers the date-times outside events. ``SUTRA_SOAK=1`` draws
ten times as many examples.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from pydantic import ValidationError
from schemathesis import APIOperation, Case, GenerationMode
from schemathesis.core.result import Err
from temporalio.testing import WorkflowEnvironment

from contracts.events import EARLIEST_OCCURRED_AT, EVENT_ADAPTER, EVENT_TYPES
from tests.datetimes import any_date_time, dated_formats
from tests.outside import AUTH, Http, event, outside_engine
from tests.processes import ApiProcess
from tests.test_fuzz_api import _error_shape_problems

SOAK = os.environ.get("SUTRA_SOAK") == "1"
EXAMPLES = 1000 if SOAK else 100
OPERATION_EXAMPLES = 150 if SOAK else 15


@pytest.fixture(scope="module")
def engine(database_url: str, dev_server: WorkflowEnvironment) -> Iterator[ApiProcess]:
    with outside_engine(database_url, dev_server.client.service_client.config.target_host) as api:
        yield api


@hsettings(max_examples=2000 if SOAK else 300, derandomize=True, database=None, deadline=None)
@given(value=any_date_time() | st.integers() | st.floats(), kind=st.sampled_from(EVENT_TYPES))
def test_parsing_an_occurred_at_raises_nothing_but_a_validation_error(value: Any, kind: str):
    """The contract alone: whatever the value, a parsed event is in UTC between 2000 and
    9999, or the error is pydantic's (which the API turns into a 422), never OverflowError."""
    try:
        parsed = EVENT_ADAPTER.validate_python(event(kind, value))
    except ValidationError as exc:
        refused = [e["loc"][-1] for e in exc.errors()]
    else:
        refused = []
    if refused:
        assert refused == ["occurred_at"]
        return
    assert parsed.occurred_at.tzinfo is UTC
    assert parsed.occurred_at >= EARLIEST_OCCURRED_AT


def _overflows(text: str) -> bool:
    """Parses as an aware date-time but has no UTC equivalent in years 1-9999."""
    try:
        moment = datetime.fromisoformat(text.replace("z", "Z"))
    except ValueError:
        return False
    if moment.tzinfo is None:
        return False
    try:
        moment.astimezone(UTC)
    except OverflowError:
        return True
    return False


def _now(delta: timedelta = timedelta(0), offset: str = "Z") -> str:
    moment = datetime.now(UTC) + delta
    if offset == "Z":
        return moment.isoformat().replace("+00:00", "Z")
    sign = 1 if offset[0] == "+" else -1
    shift = timedelta(hours=int(offset[1:3]), minutes=int(offset[4:6])) * sign
    return (moment + shift).replace(tzinfo=None).isoformat() + offset


def _cases() -> list[tuple[Any, bool]]:
    """(occurred_at, accepted?) decided by construction, not by re-deriving the parser."""
    refused = [
        "9999-12-31T23:59:59-01:00",  # the reported one: year 10000 in UTC
        "9999-12-31T23:00:00-23:59",
        "0001-01-01T00:00:00+01:00",  # year 0 in UTC
        "0001-01-01T23:58:59.999999+23:59",
        "9999-12-31T23:59:59Z",  # representable, absurdly far ahead
        "0001-01-01T00:00:00Z",
        "1970-01-01T00:00:00Z",  # Unix time 0
        "1999-12-31T23:59:59Z",
        "2016-12-31T23:59:60Z",  # a leap second: not a Python time
        "2026-01-01T24:00:00Z",
        "2026-01-01T10:00:00+24:00",
        "2026-01-01T10:00:00",  # naive
        "10000-01-01T00:00:00Z",
        0,
        -1,
        1e20,
        _now(timedelta(hours=2)),
        _now(timedelta(minutes=20), "+05:30"),
    ]
    accepted = [
        _now(),
        _now(timedelta(minutes=5), "+05:30"),
        _now(timedelta(minutes=14)),
        _now(timedelta(hours=-3), "-08:00"),
        _now(timedelta(days=-400), "+23:59"),
        "2000-01-01T00:00:00Z",
        "2000-01-01T00:00:00.000001-00:01",
    ]
    return [(v, False) for v in refused] + [(v, True) for v in accepted]


def test_every_event_type_alone_and_in_a_batch_answers_202_or_422_naming_the_field(
    engine: ApiProcess,
):
    cases = _cases()
    problems: list[str] = []
    with Http(base_url=engine.url, headers=AUTH, timeout=30) as http:
        singles = [event(EVENT_TYPES[n % len(EVENT_TYPES)], v) for n, (v, _) in enumerate(cases)]
        for body, (value, ok) in zip(singles, cases, strict=True):
            response = http.post("/v1/events", json=body)
            expected = 202 if ok else 422
            if response.status_code != expected:
                problems.append(
                    f"{body['type']} at {value!r}: {response.status_code} {response.text}"
                )
            elif not ok and [f["loc"] for f in response.json()["fields"]] != [["occurred_at"]]:
                problems.append(f"{value!r}: the error does not name occurred_at: {response.text}")
            stored = http.get(f"/v1/events/{body['id']}").status_code
            if stored != (200 if ok else 404):
                problems.append(f"{value!r}: GET /v1/events/{{id}} is {stored}")

        # One batch: every case, each after a valid event of another type.
        batch: list[dict[str, Any]] = []
        for n, (value, _) in enumerate(cases):
            batch.append(event(EVENT_TYPES[(n + 3) % len(EVENT_TYPES)], _now()))
            batch.append(event(EVENT_TYPES[n % len(EVENT_TYPES)], value))
        response = http.post("/v1/events/batch", json={"events": batch})
        assert response.status_code == 207, response.text
        results = response.json()["results"]
        for n, (value, ok) in enumerate(cases):
            valid, tried = results[2 * n], results[2 * n + 1]
            if valid["status"] != "accepted":
                problems.append(f"batch: the valid event beside {value!r} was {valid}")
            if tried["status"] != ("accepted" if ok else "rejected"):
                problems.append(f"batch: {value!r} was {tried}")
            elif not ok and tried["error"]["fields"][0]["loc"] != [
                "events",
                2 * n + 1,
                "occurred_at",
            ]:
                problems.append(f"batch: {value!r} names the wrong place: {tried}")
        for n, result in enumerate(results):
            stored = http.get(f"/v1/events/{batch[n]['id']}").status_code
            if stored != (200 if result["status"] == "accepted" else 404):
                problems.append(f"batch item {n} ({result['status']}) GET is {stored}")

    assert not problems, "\n".join(problems)


def test_drawn_date_times_never_crash_intake_and_accepted_ones_count_on_our_clock(
    engine: ApiProcess,
):
    problems: list[str] = []
    http = Http(base_url=engine.url, headers=AUTH, timeout=30)

    @hsettings(
        max_examples=EXAMPLES,
        derandomize=True,
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(
        value=any_date_time(),
        kind=st.sampled_from(EVENT_TYPES),
        batched=st.booleans(),
        position=st.integers(0, 3),
    )
    def run(value: str, kind: str, batched: bool, position: int) -> None:
        body = event(kind, value)
        if batched:
            events = [event(EVENT_TYPES[i], _now()) for i in range(4)]
            events.insert(position, body)
            response = http.post("/v1/events/batch", json={"events": events})
            if response.status_code != 207:
                problems.append(f"batch with {value!r}: {response.status_code} {response.text}")
                return
            results = response.json()["results"]
            others = [r["status"] for i, r in enumerate(results) if i != position]
            if others != ["accepted"] * 4:
                problems.append(f"batch with {value!r}: the others were {others}")
            mine = results[position]
            error = mine.get("error") or {}
            where = ["events", position, "occurred_at"]
            status = 202 if mine["status"] == "accepted" else 422
        else:
            response = http.post("/v1/events", json=body)
            status = response.status_code
            error = response.json() if status >= 400 else {}
            where = ["occurred_at"]
        if status not in (202, 422):
            problems.append(f"{kind} at {value!r}: {status} {response.text[:300]}")
            return
        if status == 422:
            shape = _error_shape_problems(error)
            if shape or [f["loc"] for f in error.get("fields", [])] != [where]:
                problems.append(f"{value!r}: {shape or 'does not name ' + str(where)}: {error}")
            return
        if _overflows(value):
            problems.append(f"{value!r} has no UTC equivalent but was accepted")
        stored = http.get(f"/v1/events/{body['id']}").json()
        occurred, received = (
            datetime.fromisoformat(stored[k]) for k in ("occurred_at", "received_at")
        )
        if occurred > received:
            problems.append(f"{value!r} stored ahead of its arrival: {stored}")

    try:
        run()
    finally:
        http.close()
    assert not problems, "\n".join(problems[:20])


@pytest.fixture(scope="module")
def edge_formats() -> Iterator[None]:
    with dated_formats(edges_only=True):
        yield


_FORMATS = {"date-time", "date", "time", "duration"}


def _with_formats(schema: dict[str, Any]) -> set[str]:
    """Names of component schemas that hold one of ``_FORMATS`` anywhere within."""
    components = schema.get("components", {}).get("schemas", {})
    found: set[str] = set()

    def holds(node: Any) -> bool:
        if isinstance(node, dict):
            if node.get("format") in _FORMATS:
                return True
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.rsplit("/", 1)[-1] in found:
                return True
            return any(holds(v) for v in node.values())
        return isinstance(node, list) and any(holds(v) for v in node)

    changed = True
    while changed:  # until no more schemas reach one (refs of refs)
        changed = False
        for name, definition in components.items():
            if name not in found and holds(definition):
                found.add(name)
                changed = True
    return found


def test_every_date_time_date_time_and_duration_field_of_every_operation_below_500(
    engine: ApiProcess, edge_formats: None
):
    raw = httpx.get(f"{engine.url}/openapi.json", timeout=30).json()
    schema = schemathesis.openapi.from_dict(raw)
    dated = _with_formats(raw)
    operations: list[APIOperation] = []
    for result in schema.get_all_operations():
        if isinstance(result, Err):
            raise result.err()
        operation = result.ok()
        request = {k: v for k, v in operation.definition.raw.items() if k != "responses"}
        text = json.dumps(request)
        if any(f'"{f}"' in text for f in _FORMATS) or any(
            f'/schemas/{name}"' in text for name in dated
        ):
            operations.append(operation)
    labels = {o.label for o in operations}
    # The batch holds events; rules hold durations and times; events hold a birthday.
    assert {"POST /v1/events", "POST /v1/events/batch", "POST /v1/rules"} <= labels, labels
    # The batch's items are described as events, so they get the same values.
    batch = raw["paths"]["/v1/events/batch"]["post"]["requestBody"]["content"]
    items = batch["application/json"]["schema"]["properties"]["events"]["items"]
    assert items == {"$ref": "#/components/schemas/Event"}
    print(f"\n{len(operations)} operations take a date-time, date, time or duration")

    failures: list[str] = []
    with requests.Session() as http:
        for operation in operations:

            @hsettings(
                max_examples=OPERATION_EXAMPLES,
                derandomize=True,
                deadline=None,
                database=None,
                phases=[Phase.explicit, Phase.generate],
                suppress_health_check=list(HealthCheck),
            )
            @given(case=operation.as_strategy(generation_mode=GenerationMode.POSITIVE))
            def run(case: Case) -> None:
                try:
                    response = case.call(
                        base_url=engine.url, session=http, headers=AUTH, timeout=30
                    )
                except requests.RequestException as exc:
                    failures.append(f"{case.operation.label}: {exc!r}\n  body={case.body!r:.400}")
                    return
                problem = None
                if response.status_code >= 500:
                    problem = f"server error {response.status_code}"
                elif response.status_code >= 400:
                    try:
                        shape = _error_shape_problems(response.json())
                    except ValueError:
                        shape = ["error body is not JSON"]
                    problem = "; ".join(shape) or None
                if problem and len(failures) < 20:
                    failures.append(
                        f"{case.operation.label}: {problem}\n  body={case.body!r:.400}\n"
                        f"  -> {response.status_code} {response.text[:300]}"
                    )

            run()
    assert not failures, "\n\n".join(failures)
