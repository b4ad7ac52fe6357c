"""Fake Razorpay (Payment Links, refunds) and Stripe (Checkout Sessions, refunds) APIs.

The real SDKs talk to these. Neither provider publishes an OpenAPI document we carry, so
each request is checked against the rules their API references state: Razorpay JSON with
integer minor-unit amounts, a ``reference_id`` of at most 40 characters that is unique per
account, ``expire_by`` at least 15 minutes ahead; Stripe form-encoded parameters, an
expiry 30 minutes to 24 hours ahead, idempotency keys that replay the first answer.
Violations are collected and fail the test at teardown.
"""

from __future__ import annotations

import base64
import json
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from pytest_httpserver import HTTPServer
from werkzeug.wrappers import Request, Response

RAZORPAY_KEY_ID = "rzp_test_sutra"
RAZORPAY_KEY_SECRET = "rzp-test-secret"
RAZORPAY_WEBHOOK_SECRET = "rzp-webhook-secret"
STRIPE_API_KEY = "sk_test_sutra"
STRIPE_WEBHOOK_SECRET = "whsec_sutra_test"


def _json(status: int, body: Any) -> Response:
    return Response(json.dumps(body), status=status, content_type="application/json")


@dataclass
class Call:
    method: str
    path: str
    body: dict[str, Any]
    headers: dict[str, str]


@dataclass
class _Base:
    server: HTTPServer = field(default_factory=lambda: HTTPServer(host="127.0.0.1", port=0))
    calls: list[Call] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    # Answer 500 to the next N creates *after* storing them: a provider that did the work
    # but whose answer never reached us.
    lose_next_creates: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.port}"

    def start(self) -> Any:
        self.server.expect_request(re.compile(".*")).respond_with_handler(self._handle)
        self.server.start()
        return self

    def stop(self) -> None:
        self.server.clear()
        if self.server.is_running():
            self.server.stop()

    def calls_to(self, method: str, pattern: str) -> list[Call]:
        return [c for c in self.calls if c.method == method and re.fullmatch(pattern, c.path)]

    def _handle(self, request: Request) -> Response:
        with self.lock:
            return self._route(request)

    def _route(self, request: Request) -> Response:
        raise NotImplementedError


@dataclass
class FakeRazorpay(_Base):
    links: dict[str, dict[str, Any]] = field(default_factory=dict)
    refunds: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def reset(self) -> None:
        with self.lock:
            self.calls.clear()
            self.violations.clear()
            self.links.clear()
            self.refunds.clear()
            self.lose_next_creates = 0

    def _route(self, request: Request) -> Response:
        body: dict[str, Any] = {}
        if request.data:
            try:
                body = json.loads(request.data)
            except ValueError:
                self.violations.append(f"{request.path}: body is not JSON")
        self.calls.append(Call(request.method, request.path, body, dict(request.headers)))
        expected = (
            "Basic "
            + base64.b64encode(f"{RAZORPAY_KEY_ID}:{RAZORPAY_KEY_SECRET}".encode()).decode()
        )
        if request.headers.get("Authorization") != expected:
            return _json(401, {"error": {"code": "BAD_REQUEST_ERROR", "description": "auth"}})
        path, method = request.path, request.method
        if path == "/v1/payment_links" and method == "POST":
            return self._create(body)
        if path == "/v1/payment_links" and method == "GET":
            reference = request.args.get("reference_id")
            found = [v for v in self.links.values() if v["reference_id"] == reference]
            return _json(200, {"payment_links": found})
        match = re.fullmatch(r"/v1/payment_links/(plink_\w+)(/cancel)?", path)
        if match and match.group(1) in self.links:
            link = self.links[match.group(1)]
            if match.group(2) and method == "POST":
                if link["status"] != "created":
                    return _json(
                        400,
                        {
                            "error": {
                                "code": "BAD_REQUEST_ERROR",
                                "description": f"Payment link is {link['status']}",
                            }
                        },
                    )
                link["status"] = "cancelled"
            return _json(200, link)
        match = re.fullmatch(r"/v1/payments/(pay_\w+)/refunds?", path)
        if match:
            payment_id = match.group(1)
            if method == "GET":
                return _json(
                    200, {"entity": "collection", "items": self.refunds.get(payment_id, [])}
                )
            if not isinstance(body.get("amount"), int) or body["amount"] <= 0:
                self.violations.append(f"refund amount must be a positive integer: {body}")
            refund = {
                "id": f"rfnd_{uuid.uuid4().hex[:14]}",
                "entity": "refund",
                "amount": body.get("amount"),
                "payment_id": payment_id,
                "receipt": body.get("receipt"),
                "status": "processed",
            }
            self.refunds.setdefault(payment_id, []).append(refund)
            return _json(200, refund)
        self.violations.append(f"unexpected Razorpay call {method} {path}")
        return _json(404, {"error": {"code": "BAD_REQUEST_ERROR", "description": "not found"}})

    def _create(self, body: dict[str, Any]) -> Response:
        problems = []
        if not isinstance(body.get("amount"), int) or body["amount"] < 100:
            problems.append("amount must be an integer in minor units, at least 100")
        if not re.fullmatch(r"[A-Z]{3}", str(body.get("currency", ""))):
            problems.append("currency must be an ISO 4217 code")
        reference = body.get("reference_id")
        if not isinstance(reference, str) or not 1 <= len(reference) <= 40:
            problems.append("reference_id must be 1-40 characters")
        expire_by = body.get("expire_by")
        if not isinstance(expire_by, int) or expire_by < time.time() + 15 * 60 - 5:
            problems.append("expire_by must be a unix time at least 15 minutes ahead")
        if problems:
            self.violations.extend(f"payment_links: {p}" for p in problems)
            return _json(400, {"error": {"code": "BAD_REQUEST_ERROR", "description": problems[0]}})
        if any(v["reference_id"] == reference for v in self.links.values()):
            return _json(
                400,
                {
                    "error": {
                        "code": "BAD_REQUEST_ERROR",
                        "description": f"payment link with reference_id {reference} exists",
                    }
                },
            )
        link_id = f"plink_{uuid.uuid4().hex[:14]}"
        link = {
            "id": link_id,
            "entity": "payment_link",
            "amount": body["amount"],
            "amount_paid": 0,
            "currency": body["currency"],
            "reference_id": reference,
            "description": body.get("description"),
            "expire_by": expire_by,
            "notes": body.get("notes") or {},
            "customer": body.get("customer") or {},
            "status": "created",
            "payments": None,
            "short_url": f"https://rzp.io/i/{link_id[-8:]}",
        }
        self.links[link_id] = link
        if self.lose_next_creates > 0:
            self.lose_next_creates -= 1
            return _json(500, {"error": {"code": "SERVER_ERROR", "description": "lost"}})
        return _json(200, link)

    def pay(self, link_id: str, *, created_at: int | None = None) -> tuple[bytes, str]:
        """The customer pays: returns the ``payment_link.paid`` webhook body and event id."""
        with self.lock:
            link = self.links[link_id]
            payment_id = f"pay_{uuid.uuid4().hex[:14]}"
            link["status"], link["amount_paid"] = "paid", link["amount"]
            link["payments"] = [{"payment_id": payment_id, "amount": link["amount"]}]
        payload = {
            "entity": "event",
            "account_id": "acc_sutra",
            "event": "payment_link.paid",
            "contains": ["payment_link", "order", "payment"],
            "payload": {
                "payment_link": {"entity": link},
                "payment": {
                    "entity": {
                        "id": payment_id,
                        "entity": "payment",
                        "amount": link["amount"],
                        "currency": link["currency"],
                        "status": "captured",
                    }
                },
            },
            "created_at": created_at if created_at is not None else int(time.time()),
        }
        return json.dumps(payload).encode(), f"evt_{uuid.uuid4().hex[:14]}"


@dataclass
class FakeStripe(_Base):
    sessions: dict[str, dict[str, Any]] = field(default_factory=dict)
    refunds: list[dict[str, Any]] = field(default_factory=list)
    idempotent: dict[str, tuple[int, Any]] = field(default_factory=dict)

    def reset(self) -> None:
        with self.lock:
            self.calls.clear()
            self.violations.clear()
            self.sessions.clear()
            self.refunds.clear()
            self.idempotent.clear()
            self.lose_next_creates = 0

    def _route(self, request: Request) -> Response:
        form = dict(parse_qsl(request.get_data(as_text=True), keep_blank_values=True))
        self.calls.append(Call(request.method, request.path, form, dict(request.headers)))
        if request.headers.get("Authorization") != f"Bearer {STRIPE_API_KEY}":
            return _json(401, {"error": {"type": "invalid_request_error", "message": "key"}})
        key = request.headers.get("Idempotency-Key")
        if request.method == "POST" and key and key in self.idempotent:
            status, body = self.idempotent[key]
            return _json(status, body)
        status, body = self._dispatch(request.method, request.path, form)
        if request.method == "POST" and key:
            self.idempotent[key] = (status, body)
        creating = request.method == "POST" and request.path == "/v1/checkout/sessions"
        if creating and self.lose_next_creates > 0:
            self.lose_next_creates -= 1
            return _json(500, {"error": {"type": "api_error", "message": "lost"}})
        return _json(status, body)

    def _dispatch(self, method: str, path: str, form: dict[str, str]) -> tuple[int, Any]:
        if path == "/v1/checkout/sessions" and method == "POST":
            return self._create(form)
        match = re.fullmatch(r"/v1/checkout/sessions/(cs_\w+)(/expire)?", path)
        if match and match.group(1) in self.sessions:
            session = self.sessions[match.group(1)]
            if match.group(2):
                if session["status"] != "open":
                    return 400, {
                        "error": {
                            "type": "invalid_request_error",
                            "message": f"session is {session['status']}",
                        }
                    }
                session["status"] = "expired"
            return 200, session
        if path == "/v1/refunds" and method == "POST":
            amount = form.get("amount", "")
            if not amount.isdigit() or not form.get("payment_intent"):
                self.violations.append(f"refund needs payment_intent and integer amount: {form}")
            refund = {
                "id": f"re_{uuid.uuid4().hex[:14]}",
                "object": "refund",
                "amount": int(amount) if amount.isdigit() else None,
                "payment_intent": form.get("payment_intent"),
                "status": "succeeded",
            }
            self.refunds.append(refund)
            return 200, refund
        self.violations.append(f"unexpected Stripe call {method} {path}")
        return 404, {"error": {"type": "invalid_request_error", "message": "not found"}}

    def _create(self, form: dict[str, str]) -> tuple[int, Any]:
        problems = []
        if form.get("mode") != "payment":
            problems.append("mode must be payment")
        amount = form.get("line_items[0][price_data][unit_amount]", "")
        if not amount.isdigit() or int(amount) <= 0:
            problems.append("line_items[0][price_data][unit_amount] must be a positive integer")
        currency = form.get("line_items[0][price_data][currency]", "")
        if not re.fullmatch(r"[a-z]{3}", currency):
            problems.append("currency must be a lower-case ISO 4217 code")
        expires = int(form.get("expires_at", "0") or 0)
        now = time.time()
        if not now + 30 * 60 - 5 <= expires <= now + 24 * 3600 + 5:
            problems.append("expires_at must be 30 minutes to 24 hours ahead")
        if not form.get("success_url"):
            problems.append("success_url is required in hosted mode")
        if problems:
            self.violations.extend(f"checkout.sessions: {p}" for p in problems)
            return 400, {"error": {"type": "invalid_request_error", "message": problems[0]}}
        session_id = f"cs_test_{uuid.uuid4().hex[:20]}"
        session = {
            "id": session_id,
            "object": "checkout.session",
            "amount_total": int(amount),
            "currency": currency,
            "client_reference_id": form.get("client_reference_id"),
            "expires_at": expires,
            "metadata": {
                k[len("metadata[") : -1]: v for k, v in form.items() if k.startswith("metadata[")
            },
            "mode": "payment",
            "payment_intent": None,
            "payment_status": "unpaid",
            "status": "open",
            "url": f"https://checkout.stripe.com/c/pay/{session_id}",
        }
        self.sessions[session_id] = session
        return 200, session

    def pay(self, session_id: str) -> dict[str, Any]:
        """The customer pays: returns the ``checkout.session.completed`` event."""
        with self.lock:
            session = self.sessions[session_id]
            session["status"], session["payment_status"] = "complete", "paid"
            session["payment_intent"] = f"pi_{uuid.uuid4().hex[:20]}"
        return {
            "id": f"evt_{uuid.uuid4().hex[:20]}",
            "object": "event",
            "type": "checkout.session.completed",
            "created": int(time.time()),
            "data": {"object": dict(session)},
        }
