"""Date-times outside events, sent to the engine from outside (issue 11): the Unix times in
signed provider webhooks (unsigned fuzzing never gets past the signature check to read
them), rule durations that point past year 9999, and date-times the schema cannot see,
inside paging cursors and template sample data. Never a 5xx; a 4xx in the documented
shape, naming the field where there is one."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from temporalio.testing import WorkflowEnvironment

from services.templating.samples import SAMPLES
from tests.factories import uid
from tests.outside import AUTH, Http, outside_engine
from tests.processes import ApiProcess
from tests.providers.fake_payments import RAZORPAY_WEBHOOK_SECRET, STRIPE_WEBHOOK_SECRET
from tests.providers.signing import SendGridSigner
from tests.test_fuzz_api import _error_shape_problems

SIGNER = SendGridSigner()


@pytest.fixture(scope="module")
def engine(database_url: str, dev_server: WorkflowEnvironment) -> Iterator[ApiProcess]:
    """With every webhook secret set, so signed bodies reach the parsers."""
    with outside_engine(
        database_url,
        dev_server.client.service_client.config.target_host,
        SUTRA_RAZORPAY_WEBHOOK_SECRET=RAZORPAY_WEBHOOK_SECRET,
        SUTRA_STRIPE_WEBHOOK_SECRET=STRIPE_WEBHOOK_SECRET,
        SUTRA_SENDGRID_WEBHOOK_PUBLIC_KEY=SIGNER.public_key,
    ) as api:
        yield api


def _razorpay(created_at: Any) -> tuple[bytes, dict[str, str]]:
    body = json.dumps(
        {
            "event": "payment_link.paid",
            "payload": {
                "payment_link": {"entity": {"reference_id": "no-such-link", "currency": "INR"}},
                "payment": {"entity": {"id": "pay_1", "amount": 100, "currency": "INR"}},
            },
            "created_at": created_at,
        }
    ).encode()
    digest = hmac.new(RAZORPAY_WEBHOOK_SECRET.encode(), body, hashlib.sha256).hexdigest()
    return body, {"X-Razorpay-Signature": digest, "Content-Type": "application/json"}


def _stripe(created: Any) -> tuple[bytes, dict[str, str]]:
    body = json.dumps(
        {
            "id": uid("evt"),
            "object": "event",
            "type": "checkout.session.completed",
            "created": created,
            "data": {
                "object": {
                    "payment_status": "paid",
                    "client_reference_id": "no-such-link",
                    "currency": "usd",
                    "amount_total": 1200,
                }
            },
        }
    ).encode()
    now = int(datetime.now(UTC).timestamp())
    mac = hmac.new(STRIPE_WEBHOOK_SECRET.encode(), f"{now}.".encode() + body, hashlib.sha256)
    return body, {"Stripe-Signature": f"t={now},v1={mac.hexdigest()}"}


def _sendgrid(timestamp: Any) -> tuple[bytes, dict[str, str]]:
    body = json.dumps(
        [{"event": "delivered", "sg_event_id": uid("sg"), "timestamp": timestamp}]
    ).encode()
    return body, SIGNER.headers(body)


UNIX_EDGES: list[Any] = [
    0,
    -1,
    10**12,
    253402300800,
    -62135596801,
    2**63,
    -(2**63),
    1e400,  # JSON 1e400 reads as infinity
    "soon",
    None,
    [],
    int(datetime.now(UTC).timestamp()) + 3600,
]


def test_signed_webhooks_with_unix_times_past_a_date_time_are_refused_not_500(
    engine: ApiProcess,
):
    problems: list[str] = []
    with Http(base_url=engine.url, timeout=30) as http:
        for value in UNIX_EDGES:
            for path, make in (
                ("/v1/webhooks/razorpay", _razorpay),
                ("/v1/webhooks/stripe", _stripe),
                ("/v1/webhooks/sendgrid", _sendgrid),
            ):
                body, headers = make(value)
                response = http.post(path, content=body, headers=headers)
                if response.status_code >= 500:
                    problems.append(f"{path} at {value!r}: {response.status_code}")
                elif response.status_code >= 400 and _error_shape_problems(response.json()):
                    problems.append(f"{path} at {value!r}: {response.text}")
    assert not problems, "\n".join(problems)


def test_a_rule_whose_durations_point_past_year_9999_is_refused_naming_each(
    engine: ApiProcess,
):
    """now + P999999999D is no date-time: such a rule previewed with a 500 and would fail
    its journeys' coupon and timer arithmetic. Ten years is the most a rule may say."""
    huge = "P999999999D"
    rule = {
        "name": "Forever",
        "trigger": {"event": "cart.abandoned", "after": huge},
        "steps": [
            {"wait": huge},
            {
                "send": {
                    "channels": ["email"],
                    "template": "cart_reminder_1",
                    "incentive": {"percent_off": 5, "expires_in": huge},
                }
            },
        ],
        "attribution_window": huge,
    }
    with Http(base_url=engine.url, headers=AUTH, timeout=30) as http:
        response = http.post("/v1/rules", json=rule)
        assert response.status_code == 422, response.text
        assert not _error_shape_problems(response.json())
        named = [f["loc"] for f in response.json()["fields"]]
        assert named == [
            ["trigger", "after"],
            ["steps", 0, "wait"],
            ["steps", 1, "send", "incentive", "expires_in"],
            ["attribution_window"],
        ]
        ten_years = {**rule, "trigger": {"event": "cart.abandoned", "after": "P3650D"}}
        ten_years["steps"] = [{"wait": "P3650D"}]
        ten_years["attribution_window"] = "P3650D"
        assert http.post("/v1/rules", json=ten_years).status_code == 201


PLAIN_MOMENT = "2026-01-01T10:00:00Z"
CURSOR_MOMENTS = [
    PLAIN_MOMENT,
    "9999-12-31T23:59:59-01:00",
    "0001-01-01T00:00:00+01:00",
    "9999-12-31T23:59:59.999999+00:00",
    "2026-01-01T10:00:00",
    "2016-12-31T23:59:60+00:00",
    "not a time",
]


def _cursor(moment: str, ident: str, *, padded: bool) -> str:
    raw = base64.urlsafe_b64encode(f"{moment}|{ident}".encode()).decode()
    return raw if padded else raw.rstrip("=")


def test_date_times_inside_cursors_and_template_samples_are_4xx_or_answered(
    engine: ApiProcess,
):
    """Date-times the schema cannot see: inside the opaque paging cursors (messages, audit)
    and in a template preview's sample data (the ``date`` and ``datetime`` filters)."""
    problems: list[str] = []
    with Http(base_url=engine.url, headers=AUTH, timeout=30) as http:
        for moment in CURSOR_MOMENTS:
            for path, ident, padded in (
                ("/v1/messages?customer_id=c_1&cursor=", str(uuid.uuid4()), True),
                ("/v1/audit?cursor=", "7", False),
            ):
                response = http.get(path + _cursor(moment, ident, padded=padded))
                if response.status_code not in (200, 400, 422):
                    problems.append(f"{path}{moment!r}: {response.status_code} {response.text}")
            for name, context in (
                ("birthday", {"coupon": {"expires_at": moment, "code": "X", "percent_off": 5}}),
                ("order_cod_confirmation", {"order": {**SAMPLES["order"], "confirm_by": moment}}),
            ):
                response = http.post(
                    f"/v1/templates/{name}/preview",
                    json={"channel": "sms", "locale": "en", "context": context},
                )
                if moment == PLAIN_MOMENT and response.status_code != 200:
                    problems.append(f"{name} does not render at all: {response.text}")
                if response.status_code not in (200, 422) or (
                    response.status_code == 422 and _error_shape_problems(response.json())
                ):
                    problems.append(f"{name} {moment!r}: {response.status_code} {response.text}")
    assert not problems, "\n".join(problems)
