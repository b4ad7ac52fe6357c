"""Every request has an id: the client's ``X-Request-ID`` when it sent a sane one, else a
new one. It is bound to every log line written while the request is served and answered
in the ``X-Request-ID`` header, so a client's report and the logs meet."""

from __future__ import annotations

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.platform.log_context import REQUEST_ID_HEADER, request_id


class RequestIdMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = next(
            (v.decode("latin-1") for k, v in scope.get("headers", ()) if k == b"x-request-id"),
            None,
        )
        rid = request_id(given)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", ()) if k != b"x-request-id"]
                headers.append((REQUEST_ID_HEADER.encode(), rid.encode()))
                message = {**message, "headers": headers}
            await send(message)

        with structlog.contextvars.bound_contextvars(
            request_id=rid, method=scope.get("method"), path=scope.get("path")
        ):
            await self.app(scope, receive, send_with_id)
