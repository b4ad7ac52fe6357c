"""The date range every analytics figure is read over: whole days in the shop's time zone.

``from`` and ``to`` are calendar dates, both included, as a shop owner reads a report
("1 to 31 March"); the database is asked for the half-open UTC interval they cover, so a
day's figures change with the zone, never with the server's clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from config.settings import Settings
from contracts.errors import Unprocessable
from contracts.time_zones import resolve_zone

DEFAULT_DAYS = 30
MAX_DAYS = 731  # two years of daily series is as far as one answer goes
# A day's bounds in UTC must exist: the first and last dates Python has are left out.
FIRST_DAY = date.min + timedelta(days=1)
LAST_DAY = date.max - timedelta(days=1)


@dataclass(frozen=True)
class Period:
    start: date  # first day, included
    end: date  # last day, included
    zone: ZoneInfo

    @property
    def start_utc(self) -> datetime:
        return datetime.combine(self.start, time(), self.zone).astimezone(UTC)

    @property
    def end_utc(self) -> datetime:
        """The instant the day after ``end`` begins: the interval is half-open."""
        return datetime.combine(self.end + timedelta(days=1), time(), self.zone).astimezone(UTC)

    @property
    def days(self) -> list[date]:
        return [self.start + timedelta(days=n) for n in range((self.end - self.start).days + 1)]

    def describe(self) -> dict[str, str]:
        return {
            "from": self.start.isoformat(),
            "to": self.end.isoformat(),
            "time_zone": self.zone.key,
        }


def shop_zone(settings: Settings) -> ZoneInfo:
    return resolve_zone(settings.shop_timezone, settings.default_timezone)


def period(
    start: date | None, end: date | None, zone: ZoneInfo, *, now: datetime | None = None
) -> Period:
    """The period ``start``..``end``; either may be left out (``to`` defaults to today in
    the shop's zone, ``from`` to 29 days before ``to``). 422 naming the field when ``from``
    is after ``to``, the span is longer than ``MAX_DAYS``, or a day is the first or last
    of the calendar (its bounds in UTC would not exist)."""
    today = (now or datetime.now(UTC)).astimezone(zone).date()
    for name, day in (("from", start), ("to", end)):
        if day is not None and not FIRST_DAY <= day <= LAST_DAY:
            raise Unprocessable(
                f"{name} ({day}) is outside {FIRST_DAY} to {LAST_DAY}",
                fields=[{"loc": ["query", name], "msg": f"must be {FIRST_DAY} to {LAST_DAY}"}],
            )
    last = end or today
    default_first = (
        FIRST_DAY
        if last - FIRST_DAY < timedelta(days=DEFAULT_DAYS - 1)
        else last - timedelta(days=DEFAULT_DAYS - 1)
    )
    first = start or default_first
    if first > last:
        raise Unprocessable(
            f"from ({first}) is after to ({last})",
            fields=[{"loc": ["query", "from"], "msg": f"must not be after to ({last})"}],
        )
    if (last - first).days + 1 > MAX_DAYS:
        raise Unprocessable(
            f"the period from {first} to {last} is longer than {MAX_DAYS} days",
            fields=[{"loc": ["query", "from"], "msg": f"at most {MAX_DAYS} days before to"}],
        )
    chosen = Period(first, last, zone)
    # The first and the last day must begin and end at instants a datetime can hold.
    for name, day, instant in (("from", first, "start_utc"), ("to", last, "end_utc")):
        try:
            getattr(chosen, instant)
        except OverflowError:
            raise _out_of_range(name, day, zone) from None
    return chosen


def _out_of_range(name: str, day: date, zone: ZoneInfo) -> Unprocessable:
    msg = f"the period's days in {zone.key} must fall within 0001-01-01..9999-12-31 UTC"
    return Unprocessable(f"{name} ({day}): {msg}", fields=[{"loc": ["query", name], "msg": msg}])
