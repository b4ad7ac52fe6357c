"""A fake SendGrid Mail Send endpoint: validates what the real SDK sends, records it,
answers like SendGrid, and can fail, hang or storm on demand."""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

from pytest_httpserver import HTTPServer
from werkzeug.wrappers import Request, Response

from tests.providers.openapi import violations
from tests.providers.storm import Call, Phase, Storm


@dataclass
class RecordedMail:
    json: dict[str, Any]
    headers: dict[str, str]
    message_id: str

    @property
    def to(self) -> list[str]:
        return [r["email"] for p in self.json["personalizations"] for r in p["to"]]

    def content(self, kind: str) -> str | None:
        return next((c["value"] for c in self.json.get("content", []) if c["type"] == kind), None)


@dataclass
class _Failure:
    status: int
    body: dict[str, Any]
    times: int
    to: str | None = None  # only mail to this address (None: any)


class FakeSendGrid:
    def __init__(self, api_key: str = "SG.test-key") -> None:
        self.api_key = api_key
        self.server = HTTPServer(threaded=True)
        self.requests: list[RecordedMail] = []
        self.violations: list[str] = []
        self._failures: list[_Failure] = []
        self._lock = threading.Lock()
        self._hold: threading.Event | None = None
        self._drop_held = False
        self.held = threading.Semaphore(0)
        self.storm = Storm()
        # Every Mail Send it answered, in order (``requests`` holds the mail it kept).
        self.calls: list[Call] = []

    def start(self) -> FakeSendGrid:
        self.server.start()
        self.server.expect_request(
            re.compile(r"^/v3/mail/send$"), method="POST"
        ).respond_with_handler(self._mail_send)
        return self

    def reset(self) -> None:
        """Forget everything between tests; the server keeps running."""
        self.release()
        self.requests.clear()
        self.violations.clear()
        self._failures.clear()
        self.held = threading.Semaphore(0)
        self.storm = Storm()
        self.calls.clear()

    def stop(self) -> None:
        self.release()
        self.server.clear()
        if self.server.is_running():
            self.server.stop()

    @property
    def url(self) -> str:
        return self.server.url_for("").rstrip("/")

    def fail_next(
        self,
        status: int,
        body: dict[str, Any] | None = None,
        times: int = 1,
        to: str | None = None,
    ) -> None:
        """Fail the next ``times`` sends (to ``to`` only, if given: the fake is shared by a
        process's tests, whose journeys could take a failure meant for another test)."""
        default = {"errors": [{"message": "injected failure", "field": None, "help": None}]}
        with self._lock:
            self._failures.append(_Failure(status, body or default, times, to))

    def start_storm(self, *phases: Phase) -> None:
        """From now on, answer as the phases say, one after the other (then normally)."""
        self.storm.add(*phases)

    def hold(self, *, drop: bool = False) -> None:
        """Block the next requests until ``release()``. Held requests are recorded first
        (the provider got them), unless ``drop`` (they never arrived)."""
        self._hold = threading.Event()
        self._drop_held = drop

    def release(self) -> None:
        if self._hold is not None:
            self._hold.set()
        self._hold = None

    def sent_to(self, email: str) -> list[RecordedMail]:
        return [m for m in self.requests if email in m.to]

    def _mail_send(self, request: Request) -> Response:
        problems = violations("sendgrid", request)
        if problems:
            self.violations += problems
            return _json(
                400, {"errors": [{"message": p, "field": None, "help": None} for p in problems]}
            )
        if request.headers.get("Authorization") != f"Bearer {self.api_key}":
            return _json(
                401,
                {
                    "errors": [
                        {
                            "message": "The provided authorization grant is invalid",
                            "field": None,
                            "help": None,
                        }
                    ]
                },
            )
        recipients = _recipients(request)
        with self._lock:
            failure = next((f for f in self._failures if f.to is None or f.to in recipients), None)
            if failure is not None:
                failure.times -= 1
                if failure.times <= 0:
                    self._failures.remove(failure)
        if failure is not None:
            return _json(failure.status, failure.body)
        message_id = uuid.uuid4().hex[:22]
        mail = RecordedMail(
            json=json.loads(request.get_data()),
            headers=dict(request.headers),
            message_id=message_id,
        )
        phase = self.storm.strike()
        if phase is not None:
            if phase.accept:
                self.requests.append(mail)
            headers = phase.headers()
            self._log(mail, phase, headers.get("Retry-After"))
            response = _json(phase.status, _STORM_ERRORS.get(phase.status, _STORM_ERRORS[500]))
            response.headers.update(headers)
            return response
        hold, drop = self._hold, self._drop_held
        if hold is None or not drop:
            self.requests.append(mail)
            self._log(mail, None, None)
        if hold is not None:
            self.held.release()
            hold.wait(timeout=60)
            if drop:
                return _json(503, {"errors": [{"message": "dropped", "field": None, "help": None}]})
        return Response(status=202, headers={"X-Message-Id": message_id})

    def _log(self, mail: RecordedMail, phase: Phase | None, retry_after: str | None) -> None:
        """``phase``: the storm's answer; None: 202, kept."""
        to = mail.to[0] if mail.to else None
        if phase is None:
            self.calls.append(Call(time.monotonic(), "POST", to, 202, kept=True))
            return
        self.calls.append(
            Call(
                time.monotonic(),
                "POST",
                to,
                phase.status,
                retry_after=retry_after,
                asked=phase.asked,
                kept=phase.accept,
            )
        )


def _error(message: str) -> dict[str, Any]:
    return {"errors": [{"message": message, "field": None, "help": None}]}


# What SendGrid says with each status of a storm.
_STORM_ERRORS = {
    429: _error("too many requests"),
    500: _error("internal error"),
    502: _error("bad gateway"),
    503: _error("service unavailable"),
    504: _error("gateway timeout"),
}


def _json(status: int, body: dict[str, Any]) -> Response:
    return Response(json.dumps(body), status=status, content_type="application/json")


def _recipients(request: Request) -> set[str]:
    """The To addresses of a Mail Send body (none if it is not one)."""
    try:
        body = json.loads(request.get_data())
    except ValueError:
        return set()
    if not isinstance(body, dict):
        return set()
    return {
        to["email"]
        for p in body.get("personalizations") or []
        if isinstance(p, dict)
        for to in p.get("to") or []
        if isinstance(to, dict) and "email" in to
    }
