"""A provider storm for the fakes: answer 429 (with ``Retry-After``) or 5xx for a while or
for a number of requests, sometimes after keeping the message, and log every answer with
its time, so tests can see how far apart a sender's attempts came."""

from __future__ import annotations

import random
import threading
import time
from collections import deque
from dataclasses import dataclass
from email.utils import formatdate


@dataclass
class Phase:
    """One stretch of a storm: ``seconds`` long, or ``requests`` error answers long."""

    status: int
    seconds: float | None = None
    requests: int | None = None
    # Sent back as Retry-After: delay-seconds, or an HTTP-date that far ahead.
    retry_after: float | None = None
    http_date: bool = False
    # The provider keeps the message (a send that counts) and answers the error anyway.
    accept: bool = False
    # The share of requests answered with the error; the rest go through.
    share: float = 1.0

    def headers(self) -> dict[str, str]:
        if self.retry_after is None:
            return {}
        if self.http_date:
            return {"Retry-After": formatdate(time.time() + self.retry_after, usegmt=True)}
        return {"Retry-After": f"{self.retry_after:g}"}

    @property
    def asked(self) -> float | None:
        """The wait the header asks for, at the least (a date is to the second)."""
        if self.retry_after is None:
            return None
        return max(self.retry_after - 1, 0) if self.http_date else self.retry_after


@dataclass(frozen=True)
class Call:
    """A request the fake answered: when (``time.monotonic()``), for whom, and how."""

    at: float
    method: str
    to: str | None
    status: int
    retry_after: str | None = None
    asked: float | None = None  # the seconds that Retry-After asks for, at the least
    kept: bool = False


class Storm:
    """Phases one after the other: a phase measured in seconds starts when the one before
    it ends (the first when it is added), one measured in requests when its first comes."""

    def __init__(self, seed: int = 0) -> None:
        self._phases: deque[Phase] = deque()
        self._started = 0.0
        self._lock = threading.Lock()
        self._random = random.Random(seed)

    def add(self, *phases: Phase) -> None:
        assert all((p.seconds is None) != (p.requests is None) for p in phases), (
            "a phase lasts either seconds or requests"
        )
        with self._lock:
            if not self._phases:
                self._started = time.monotonic()
            self._phases.extend(phases)

    def clear(self) -> None:
        with self._lock:
            self._phases.clear()

    @property
    def raging(self) -> bool:
        with self._lock:
            self._advance(time.monotonic())
            return bool(self._phases)

    def strike(self) -> Phase | None:
        """The phase answering this request, or None to let it through."""
        now = time.monotonic()
        with self._lock:
            self._advance(now)
            if not self._phases:
                return None
            phase = self._phases[0]
            if phase.share < 1 and self._random.random() >= phase.share:
                return None
            if phase.requests is not None:
                phase.requests -= 1
                if phase.requests <= 0:
                    self._phases.popleft()
                    self._started = now
            return phase

    def _advance(self, now: float) -> None:
        while self._phases:
            phase = self._phases[0]
            if phase.seconds is None or now - self._started < phase.seconds:
                return
            self._phases.popleft()
            self._started += phase.seconds
