"""One time-zone helper, three callers' rules for a name that is no zone: templates raise,
send policy falls back through the shop's default to UTC, journeys fall back on anything."""

from __future__ import annotations

from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import pytest

from contracts.time_zones import resolve_zone


def test_the_first_zone_that_resolves_wins_and_empty_names_are_skipped():
    assert resolve_zone("Asia/Karachi", "Europe/London") == ZoneInfo("Asia/Karachi")
    assert resolve_zone(None, "Europe/London") == ZoneInfo("Europe/London")
    assert resolve_zone("", None) == ZoneInfo("UTC")


def test_send_policy_passes_over_unknown_and_invalid_names_only():
    assert resolve_zone("Nowhere/Zone", "Asia/Karachi") == ZoneInfo("Asia/Karachi")
    assert resolve_zone("../etc/passwd", "Nowhere/Zone") == ZoneInfo("UTC")
    with pytest.raises(TypeError):
        resolve_zone(5, "Asia/Karachi")


def test_templates_raise_on_a_name_that_is_no_zone():
    with pytest.raises(ZoneInfoNotFoundError):
        resolve_zone("Nowhere/Zone", falls_back_on=())
    assert resolve_zone(None, falls_back_on=()) == ZoneInfo("UTC")


def test_journeys_fall_back_to_utc_on_any_error():
    assert resolve_zone(5, falls_back_on=(Exception,)) == ZoneInfo("UTC")
    assert resolve_zone("Nowhere/Zone", falls_back_on=(Exception,)) == ZoneInfo("UTC")
