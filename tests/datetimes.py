"""Hypothesis strategies for the date-times, dates, times and durations clients send:
the edges of what parses (years 1 and 9999 with offsets up to ±23:59, which overflow in
UTC), what should not parse (leap seconds, 24:00, offsets past 23:59, naive values), and
the plausible-but-wrong (clocks hours ahead, a backfill from last year, Unix time 0).

A generator drawing dates uniformly from years 1-9999 (schemathesis' RFC 3339 one) lands
on the two overflowing days about once in 1.8 million draws: these put the edges first.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import schemathesis
from hypothesis import strategies as st
from pydantic import TypeAdapter
from schemathesis.specs.openapi.formats import unregister_string_format

# Offsets a parser accepts (±23:59 at most) and the ones around its limits.
_OFFSETS = ("Z", "z", "+00:00", "-00:00", "+00:01", "-00:01", "+01:00", "-01:00", "+05:30")
_EDGE_OFFSETS = ("+23:59", "-23:59", "+14:00", "-12:00", "+24:00", "-24:00", "+23:59:59")


def _offset() -> st.SearchStrategy[str]:
    sign = st.sampled_from("+-")
    hours = st.integers(0, 23)
    minutes = st.integers(0, 59)
    drawn = st.builds(lambda s, h, m: f"{s}{h:02d}:{m:02d}", sign, hours, minutes)
    return st.sampled_from(_OFFSETS) | st.sampled_from(_EDGE_OFFSETS) | drawn


def _fraction() -> st.SearchStrategy[str]:
    digits = st.text(alphabet="0123456789", min_size=1, max_size=9)
    return st.just("") | digits.map(".".__add__)


def edge_date_times() -> st.SearchStrategy[str]:
    """Years 1 and 9999 at the ends of their days with offsets up to ±23:59, half of them
    crossing midnight into year 0 or 10000 (no datetime holds those in UTC), half not."""

    def render(late: bool, crosses: bool, offset: int, at: int, second: int, frac: str) -> str:
        # The local minute of the day, ``offset`` minutes from UTC: on 9999-12-31 west of
        # UTC it crosses from minute 1440 - offset on, on 0001-01-01 east of UTC before it.
        if late:
            minute = 1440 - offset + at % offset if crosses else at % (1440 - offset)
        else:
            minute = at % offset if crosses else offset + at % (1440 - offset)
        day = "9999-12-31" if late else "0001-01-01"
        sign = "-" if late else "+"
        hh, mm = divmod(minute, 60)
        return (
            f"{day}T{hh:02d}:{mm:02d}:{second:02d}{frac}{sign}{offset // 60:02d}:{offset % 60:02d}"
        )

    return st.builds(
        render,
        st.booleans(),
        st.booleans(),
        st.integers(1, 1439) | st.sampled_from([1, 60, 1439]),
        st.integers(0, 1439),
        st.integers(0, 59),
        _fraction(),
    )


def malformed_date_times() -> st.SearchStrategy[str]:
    """Leap seconds, 24:00, out-of-range fields, naive and partial values, other spellings."""
    return st.sampled_from(
        [
            "2016-12-31T23:59:60Z",
            "2026-06-30T23:59:60+00:00",
            "2026-01-01T24:00:00Z",
            "2026-01-01T23:60:00Z",
            "2026-02-29T10:00:00Z",
            "2026-13-01T10:00:00Z",
            "0000-01-01T00:00:00Z",
            "10000-01-01T00:00:00Z",
            "-0001-01-01T00:00:00Z",
            "2026-01-01T10:00:00",
            "2026-01-01T10:00:00.123456789",
            "2026-01-01",
            "2026-01-01T10:00Z",
            "2026-01-01 10:00:00Z",
            "2026-01-01t10:00:00z",
            "2026-01-01T10:00:00+0530",
            "2026-01-01T10:00:00+05",
            "20260101T100000Z",
            "2026-W01-1T10:00:00Z",
            " 2026-01-01T10:00:00Z",
            "1700000000",
            "0",
            "-1",
            "",
        ]
    )


def clock_date_times(now: datetime | None = None) -> st.SearchStrategy[str]:
    """Moments around Sutra's clock: a little and a lot ahead, late, ancient, Unix time 0."""
    base = now or datetime.now(UTC)
    offsets = st.sampled_from(
        [
            timedelta(0),
            timedelta(seconds=-1),
            timedelta(minutes=5),
            timedelta(minutes=14, seconds=59),
            timedelta(minutes=15, seconds=1),
            timedelta(minutes=20),
            timedelta(hours=5, minutes=30),
            timedelta(days=1),
            timedelta(days=365 * 30),
            timedelta(hours=-2),
            timedelta(hours=-25),
            timedelta(days=-400),
        ]
    ) | st.timedeltas(min_value=timedelta(days=-3650), max_value=timedelta(days=3650))
    zone = st.sampled_from(["Z", "+05:00", "-08:00", "+23:59"])

    def render(delta: timedelta, offset: str) -> str:
        moment = base + delta
        if offset == "Z":
            return moment.isoformat().replace("+00:00", "Z")
        sign = 1 if offset[0] == "+" else -1
        hours, minutes = int(offset[1:3]), int(offset[4:6])
        shift = timedelta(hours=hours, minutes=minutes) * sign
        return (moment + shift).replace(tzinfo=None).isoformat() + offset

    fixed = st.sampled_from(
        ["1970-01-01T00:00:00Z", "1999-12-31T23:59:59Z", "2000-01-01T00:00:00Z"]
    )
    return st.builds(render, offsets, zone) | fixed


def any_date_time(now: datetime | None = None) -> st.SearchStrategy[str]:
    return edge_date_times() | malformed_date_times() | clock_date_times(now)


def edge_dates() -> st.SearchStrategy[str]:
    return st.sampled_from(
        [
            "0001-01-01",
            "9999-12-31",
            "0000-01-01",
            "2024-02-29",
            "2026-02-29",
            "2026-12-32",
            "1604-07-04",
            "2090-01-01",
            "2026-01-01T00:00:00Z",
            "20260101",
            "",
        ]
    )


def edge_times() -> st.SearchStrategy[str]:
    return st.sampled_from(
        ["00:00", "23:59:59.999999", "23:59:60", "24:00", "10:00+05:00", "10:00Z", "25:00", ""]
    )


def edge_durations() -> st.SearchStrategy[str]:
    """ISO 8601 durations at the end of what a timedelta holds, and past it."""
    return st.sampled_from(
        [
            "PT0S",
            "PT1S",
            "P999999999D",
            "P2739726Y",
            "P10000Y",
            "PT99999999999H",
            "P1Y",
            "-PT1H",
            "P",
            "PT",
        ]
    )


_ISO_DURATION: TypeAdapter[timedelta] = TypeAdapter(timedelta)


@contextlib.contextmanager
def dated_formats(*, edges_only: bool) -> Iterator[None]:
    """schemathesis draws every ``format: date-time`` (``date``, ``time``, ``duration``)
    from these while inside; ``edges_only=False`` mixes in ordinary values so the other
    fields' generation still reaches the handlers."""
    plain_moment = st.datetimes(
        min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
    ).map(lambda d: d.isoformat().replace("+00:00", "Z"))
    plain_duration = st.timedeltas(timedelta(seconds=1), timedelta(days=30)).map(
        lambda d: str(_ISO_DURATION.dump_python(d, mode="json"))
    )
    formats = {
        "date-time": edge_date_times() | any_date_time(),
        "date": edge_dates(),
        "time": edge_times(),
        "duration": edge_durations(),
    }
    if not edges_only:
        # Plain values first: hypothesis starts from a one_of's first branch, so the first
        # events are stored and later cases find their customers and ids.
        plain = {
            "date-time": plain_moment,
            "date": st.dates().map(str),
            "time": st.times().map(lambda t: t.isoformat(timespec="minutes")),
            "duration": plain_duration,
        }
        formats = {name: plain[name] | strategy for name, strategy in formats.items()}
    for name, strategy in formats.items():
        schemathesis.openapi.format(name, strategy)
    try:
        yield
    finally:
        for name in formats:
            unregister_string_format(name)
