"""A customer's time zone from its IANA name: one helper for templates, send policy and
journeys. Pure (stdlib ``zoneinfo`` only), so workflow code may call it.

Callers differ in what a bad name means, and that difference is kept on purpose:

- a template's date filters raise: a wrong zone is a template error, never a silently
  shifted date (``resolve_zone(name, falls_back_on=())``);
- send policy falls back from the customer's zone to the shop's default to UTC, passing
  over names that are unknown or not valid keys (``resolve_zone(name, default)``);
- a journey's wait falls back to UTC on any error: an exception in workflow code fails
  the workflow task, which Temporal retries until the code changes
  (``resolve_zone(name, falls_back_on=(Exception,))``).
"""

from __future__ import annotations

from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

# What ZoneInfo raises for a name that is no zone: unknown (a KeyError), or not a valid
# key ("", "../x", a NUL byte). A directory ("America") raises IsADirectoryError instead,
# and a non-string TypeError: those are not in here.
NOT_A_ZONE: tuple[type[Exception], ...] = (ZoneInfoNotFoundError, ValueError)


def resolve_zone(
    *names: str | None, falls_back_on: tuple[type[Exception], ...] = NOT_A_ZONE
) -> ZoneInfo:
    """The first of ``names`` that is a time zone, else UTC.

    Empty names are skipped; a name whose lookup raises one of ``falls_back_on`` is passed
    over, any other error propagates (``falls_back_on=()``: every error does).
    """
    for name in (*names, "UTC"):
        if name:
            try:
                return ZoneInfo(name)
            except falls_back_on:
                continue
    return ZoneInfo("UTC")
