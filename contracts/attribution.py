"""The attribution model's windows: how long after a message, per channel, an order can
still be credited to it (README "Attribution and holdouts"). Shared by settings, the
model a shop sets through the API, and a rule's own override."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Annotated, Any

from pydantic import AfterValidator

from contracts.messages import Channel

DEFAULT_WINDOWS: dict[Channel, timedelta] = {
    "email": timedelta(days=5),
    "sms": timedelta(hours=24),
    "whatsapp": timedelta(hours=24),
}
# Longest window a model or a rule may set: the bound on how far back the attribution of
# one order looks through a customer's messages.
MAX_WINDOW = timedelta(days=90)


def _checked(windows: dict[Channel, timedelta]) -> dict[Channel, timedelta]:
    for channel, window in windows.items():
        if window <= timedelta(0):
            raise ValueError(f"the {channel} window must be longer than zero")
        if window > MAX_WINDOW:
            raise ValueError(f"the {channel} window is at most {MAX_WINDOW.days} days (P90D)")
    return windows


Windows = Annotated[dict[Channel, timedelta], AfterValidator(_checked)]


def window_for(
    channel: str | None,
    model: Mapping[Any, timedelta],
    rule: Mapping[Any, timedelta] | None = None,
) -> timedelta | None:
    """A message's window: the rule's own for its channel, else the model's (None: the
    channel has no window, its messages are never credited)."""
    if rule and channel in rule:
        return rule[channel]
    return model.get(channel)
