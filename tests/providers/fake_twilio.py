"""A fake Twilio Messages API (SMS and WhatsApp): validates what the real SDK sends,
keeps every message like Twilio does (so it can be listed), fails, hangs or storms on
demand."""

from __future__ import annotations

import base64
import json
import re
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any
from urllib.parse import parse_qsl

from pytest_httpserver import HTTPServer
from werkzeug.wrappers import Request, Response

from tests.providers.openapi import violations
from tests.providers.storm import Call, Phase, Storm

ACCOUNT_SID = "AC" + "a1" * 16
AUTH_TOKEN = "twilio-test-auth-token"
MESSAGES = "/2010-04-01/Accounts/{AccountSid}/Messages.json"


@dataclass
class StoredMessage:
    sid: str
    to: str
    from_: str | None
    messaging_service_sid: str | None
    body: str
    content_sid: str | None
    content_variables: dict[str, str] | None
    status_callback: str | None
    form: dict[str, str]
    date_created: datetime = field(default_factory=lambda: datetime.now(UTC))
    status: str = "queued"

    def resource(self, account_sid: str) -> dict[str, Any]:
        stamp = format_datetime(self.date_created)
        return {
            "account_sid": account_sid,
            "api_version": "2010-04-01",
            "body": self.body,
            "date_created": stamp,
            "date_sent": None,
            "date_updated": stamp,
            "direction": "outbound-api",
            "error_code": None,
            "error_message": None,
            "from": self.from_,
            "messaging_service_sid": self.messaging_service_sid,
            "num_media": "0",
            "num_segments": "1",
            "price": None,
            "price_unit": "USD",
            "sid": self.sid,
            "status": self.status,
            "subresource_uris": {},
            "to": self.to,
            "uri": f"/2010-04-01/Accounts/{account_sid}/Messages/{self.sid}.json",
        }


@dataclass
class _Failure:
    status: int
    code: int
    message: str
    times: int
    to: str | None = None  # only sends to this number (None: any)


class FakeTwilio:
    def __init__(self, account_sid: str = ACCOUNT_SID, auth_token: str = AUTH_TOKEN) -> None:
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.server = HTTPServer(threaded=True)
        self.messages: list[StoredMessage] = []
        self._posts_to: Counter[str] = Counter()
        self.violations: list[str] = []
        self._failures: list[_Failure] = []
        self._lock = threading.Lock()
        self._hold: threading.Event | None = None
        self._drop_held = False
        self._late_held = False
        self.held = threading.Semaphore(0)
        self.storm = Storm()
        # Every request it answered, sends and lookups, in order.
        self.calls: list[Call] = []

    def start(self) -> FakeTwilio:
        self.server.start()
        base = rf"^/2010-04-01/Accounts/{self.account_sid}/Messages"
        self.server.expect_request(
            re.compile(base + r"\.json$"), method="POST"
        ).respond_with_handler(self._create)
        self.server.expect_request(
            re.compile(base + r"\.json$"), method="GET"
        ).respond_with_handler(self._list)
        self.server.expect_request(
            re.compile(base + r"/(SM[0-9a-f]{32})\.json$"), method="GET"
        ).respond_with_handler(self._fetch)
        return self

    def reset(self) -> None:
        """Forget everything between tests; the server keeps running."""
        self.release()
        self.messages.clear()
        self.violations.clear()
        self._failures.clear()
        self._posts_to.clear()
        self.held = threading.Semaphore(0)
        self.storm = Storm()
        self.calls.clear()

    def stop(self) -> None:
        self.release()
        self.server.clear()
        if self.server.is_running():
            self.server.stop()

    @property
    def base_url(self) -> str:
        return self.server.url_for("").rstrip("/")

    def fail_next(
        self,
        status: int,
        code: int,
        message: str = "injected",
        times: int = 1,
        to: str | None = None,
    ) -> None:
        """Fail the next ``times`` sends (to ``to`` only, if given: the fake is shared by a
        process's tests, and a journey of another test could take a failure meant for
        this one, and get its own number suppressed)."""
        with self._lock:
            self._failures.append(_Failure(status, code, message, times, to))

    def start_storm(self, *phases: Phase) -> None:
        """From now on, answer sends and lookups as the phases say, one after the other."""
        self.storm.add(*phases)

    def hold(self, *, drop: bool = False, late: bool = False) -> None:
        """Block the next sends until ``release()``. A held message is stored first (Twilio
        got it), unless ``drop`` (it never arrived) or ``late`` (Twilio took it in, and it
        shows in lookups only once released: still on its way in, or not yet listed)."""
        self._hold = threading.Event()
        self._drop_held = drop
        self._late_held = late

    def release(self) -> None:
        if self._hold is not None:
            self._hold.set()
        self._hold = None

    def posts_to(self, number: str) -> int:
        """Sends asked for this number, kept or refused: the count one test can trust while
        the process's other journeys text their own numbers."""
        return self._posts_to[number]

    def sent_to(self, number: str) -> list[StoredMessage]:
        return [m for m in self.messages if m.to in (number, f"whatsapp:{number}")]

    def _authorised(self, request: Request) -> bool:
        expected = base64.b64encode(f"{self.account_sid}:{self.auth_token}".encode()).decode()
        return request.headers.get("Authorization") == f"Basic {expected}"

    def _error(self, status: int, code: int, message: str) -> Response:
        body = {
            "code": code,
            "message": message,
            "more_info": f"https://www.twilio.com/docs/errors/{code}",
            "status": status,
        }
        return Response(json.dumps(body), status=status, content_type="application/json")

    def _stormed(self, phase: Phase, method: str, to: str | None, kept: bool = False) -> Response:
        headers = phase.headers()
        self.calls.append(
            Call(
                time.monotonic(),
                method,
                to,
                phase.status,
                headers.get("Retry-After"),
                phase.asked,
                kept,
            )
        )
        code, message = _STORM_ERRORS.get(phase.status, _STORM_ERRORS[500])
        response = self._error(phase.status, code, message)
        response.headers.update(headers)
        return response

    def _check(self, request: Request, template: str | None) -> Response | None:
        problems = violations("twilio", request, template)
        if problems:
            self.violations += problems
            return self._error(400, 21000, "; ".join(problems))
        if not self._authorised(request):
            return self._error(401, 20003, "Authenticate")
        return None

    def _create(self, request: Request) -> Response:
        refused = self._check(request, MESSAGES)
        if refused is not None:
            return refused
        form = dict(parse_qsl(request.get_data(as_text=True), keep_blank_values=True))
        if not (form.get("Body") or form.get("ContentSid") or form.get("MediaUrl")):
            return self._error(400, 21602, "Message body is required.")
        if not (form.get("From") or form.get("MessagingServiceSid")):
            return self._error(400, 21603, "A 'From' or 'MessagingServiceSid' is required.")
        to = form.get("To", "").removeprefix("whatsapp:")
        with self._lock:
            self._posts_to[to] += 1
            failure = next((f for f in self._failures if f.to in (None, to)), None)
            if failure is not None:
                failure.times -= 1
                if failure.times <= 0:
                    self._failures.remove(failure)
        if failure is not None:
            return self._error(failure.status, failure.code, failure.message)
        phase = self.storm.strike()
        if phase is not None and not phase.accept:
            return self._stormed(phase, "POST", form["To"])
        variables = form.get("ContentVariables")
        message = StoredMessage(
            sid="SM" + uuid.uuid4().hex,
            to=form["To"],
            from_=form.get("From"),
            messaging_service_sid=form.get("MessagingServiceSid"),
            body=form.get("Body", ""),
            content_sid=form.get("ContentSid"),
            content_variables=json.loads(variables) if variables else None,
            status_callback=form.get("StatusCallback"),
            form=form,
        )
        if phase is not None:  # accepted, then answered with an error
            self.messages.append(message)
            return self._stormed(phase, "POST", form["To"], kept=True)
        hold, drop, late = self._hold, self._drop_held, self._late_held
        if hold is None or not (drop or late):
            self._keep(message)
        if hold is not None:
            self.held.release()
            hold.wait(timeout=60)
            if drop:
                return self._error(503, 20503, "dropped")
            if late:
                self._keep(message)
        return Response(
            json.dumps(message.resource(self.account_sid)),
            status=201,
            content_type="application/json",
        )

    def _keep(self, message: StoredMessage) -> None:
        """Twilio has it now: listed by lookups from here on."""
        self.messages.append(message)
        self.calls.append(Call(time.monotonic(), "POST", message.to, 201, kept=True))

    def _list(self, request: Request) -> Response:
        refused = self._check(request, None)
        if refused is not None:
            return refused
        to, sender = request.args.get("To"), request.args.get("From")
        phase = self.storm.strike()
        if phase is not None:
            return self._stormed(phase, "GET", to)
        self.calls.append(Call(time.monotonic(), "GET", to, 200))
        after = request.args.get("DateSent>")
        found = [
            m
            for m in reversed(self.messages)
            if (to is None or m.to == to)
            and (sender is None or m.from_ == sender)
            and (after is None or m.date_created >= _parse(after))
        ]
        size = int(request.args.get("PageSize", "50"))
        page = [m.resource(self.account_sid) for m in found[:size]]
        uri = request.full_path
        return Response(
            json.dumps(
                {
                    "messages": page,
                    "end": max(len(page) - 1, 0),
                    "first_page_uri": uri,
                    "next_page_uri": None,
                    "page": 0,
                    "page_size": size,
                    "previous_page_uri": None,
                    "start": 0,
                    "uri": uri,
                }
            ),
            content_type="application/json",
        )

    def _fetch(self, request: Request) -> Response:
        refused = self._check(request, None)
        if refused is not None:
            return refused
        phase = self.storm.strike()
        if phase is not None:
            return self._stormed(phase, "GET", None)
        sid = request.path.rsplit("/", 1)[1].removesuffix(".json")
        for message in self.messages:
            if message.sid == sid:
                return Response(
                    json.dumps(message.resource(self.account_sid)), content_type="application/json"
                )
        return self._error(404, 20404, f"The requested resource {request.path} was not found")


# Twilio's error code and message for each status of a storm.
_STORM_ERRORS = {
    429: (20429, "Too Many Requests"),
    500: (20500, "Internal Server Error"),
    502: (20502, "Bad Gateway"),
    503: (20503, "Service Unavailable"),
    504: (20504, "Gateway Timeout"),
}


def _parse(value: str) -> datetime:
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
