"""What every log line of an activity or a request carries, bound once where it starts.

``configure_logging`` (config/logging.py) merges structlog's context variables into every
record, structlog's and the standard library's alike, so a line logged anywhere under an
activity names its workflow, rule and message, and a line logged while serving a request
names the request: the ``X-Request-ID`` the client sent, or one made up and answered back.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

import structlog
from temporalio import activity
from temporalio.worker import (
    ActivityInboundInterceptor,
    ExecuteActivityInput,
    Interceptor,
)

# Fields taken from an activity's input (or its ``request``), when it has them.
_INPUT_FIELDS = ("rule_id", "rule_version", "customer_id", "cart_id", "order_id")


def activity_fields(args: Any) -> dict[str, Any]:
    """The ids an activity's inputs name: rule, customer, cart, order, and ``message_key``
    (the ledger key of the message a send or abandon is about)."""
    fields: dict[str, Any] = {}
    for arg in args:
        for source in (arg, getattr(arg, "request", None)):
            if source is None:
                continue
            for name in _INPUT_FIELDS:
                value = getattr(source, name, None)
                if isinstance(value, str | int) and not isinstance(value, bool):
                    fields.setdefault(name, value)
            key = getattr(source, "ledger_key", None)
            if isinstance(key, str):
                fields.setdefault("message_key", key)
    return fields


class _BindActivity(ActivityInboundInterceptor):
    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        info = activity.info()
        with structlog.contextvars.bound_contextvars(
            activity=info.activity_type,
            attempt=info.attempt,
            workflow_id=info.workflow_id,
            workflow_type=info.workflow_type,
            run_id=info.workflow_run_id,
            **activity_fields(input.args),
        ):
            return await super().execute_activity(input)


class ActivityLogContext(Interceptor):
    """Worker interceptor: binds each activity's workflow, rule and message ids."""

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _BindActivity(super().intercept_activity(next))


REQUEST_ID_HEADER = "x-request-id"
# A client's own id is kept when it looks like one (no spaces, no control characters).
_CLIENT_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")


def request_id(given: str | None) -> str:
    if given and _CLIENT_ID.match(given):
        return given
    return uuid.uuid4().hex
