"""Email through SendGrid's v3 Mail Send, with the official ``sendgrid`` SDK."""

from __future__ import annotations

import asyncio
import json
import socket
import urllib.error
from datetime import datetime
from typing import Any

from python_http_client.exceptions import HTTPError
from sendgrid import SendGridAPIClient
from sendgrid.helpers.mail import (
    Asm,
    Category,
    CustomArg,
    From,
    GroupId,
    Header,
    HtmlContent,
    Mail,
    PlainTextContent,
    To,
)

from channels.base import (
    OutgoingMessage,
    PermanentSendError,
    Receipt,
    Suppress,
    TransientSendError,
    answered,
    retry_after,
)
from config.settings import Settings

MESSAGE_ID_ARG = "sutra_message_id"


class SendGridEmail:
    provider = "sendgrid"
    # Mail Send has no lookup; a send cut off mid-call is confirmed by the event webhook.
    can_look_up = False
    reports_status = True

    def __init__(self, settings: Settings) -> None:
        assert settings.sendgrid_api_key is not None
        self._client = SendGridAPIClient(
            settings.sendgrid_api_key.get_secret_value(), host=settings.sendgrid_host
        )
        self._client.client.timeout = settings.provider_timeout.total_seconds()
        self._from = From(settings.email_from, settings.email_from_name)
        self._asm_group = settings.sendgrid_asm_group_id

    def build(self, message: OutgoingMessage) -> dict[str, Any]:
        mail = Mail(
            from_email=self._from,
            to_emails=To(message.to),
            subject=message.subject or "",
            plain_text_content=PlainTextContent(message.text),
            html_content=HtmlContent(message.html) if message.html else None,
        )
        # Every event SendGrid reports about this email comes back with our id. On the
        # personalization, where the API documents custom_args as an object.
        mail.custom_arg = [
            CustomArg(MESSAGE_ID_ARG, str(message.message_id), p=0),
            CustomArg("sutra_template", message.template, p=0),
        ]
        mail.category = [Category(c) for c in message.categories[:10]]
        if message.kind == "marketing":
            if self._asm_group is not None:
                mail.asm = Asm(GroupId(self._asm_group))
            if message.unsubscribe_url:
                # RFC 8058 one-click unsubscribe, which Gmail and Yahoo require of bulk mail.
                mail.header = [
                    Header("List-Unsubscribe", f"<{message.unsubscribe_url}>"),
                    Header("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"),
                ]
        body: dict[str, Any] = mail.get()
        return body

    async def send(self, message: OutgoingMessage) -> Receipt:
        body = self.build(message)
        try:
            response = await asyncio.to_thread(self._client.send, body)
        except HTTPError as exc:
            raise _classify(exc) from exc
        except urllib.error.URLError as exc:
            refused = isinstance(exc.reason, ConnectionRefusedError | socket.gaierror)
            raise TransientSendError("network", str(exc.reason), not_sent=refused) from exc
        except (TimeoutError, ConnectionError) as exc:
            raise TransientSendError("network", str(exc)) from exc
        provider_id = response.headers.get("X-Message-Id") if response.headers else None
        return Receipt(provider=self.provider, provider_message_id=provider_id)

    async def find_sent(self, message: OutgoingMessage, since: datetime) -> Receipt | None:
        return None


def _classify(exc: HTTPError) -> Exception:
    status = int(getattr(exc, "status_code", 0) or 0)
    detail = _error_text(getattr(exc, "body", b""))
    if status == 429 or status >= 500:
        # 429 (rate limit) and 503 (API unavailable) turn a request away before SendGrid
        # queues it. Any other 5xx came from a request it was processing and may have
        # queued: left "sending", for its event webhook to tell.
        return TransientSendError(
            str(status),
            detail,
            not_sent=status in (429, 503),
            answered=answered(status),
            retry_after=retry_after(getattr(exc, "headers", None)),
        )
    suppress = None
    if status == 400 and "does not contain a valid address" in detail:
        suppress = Suppress(scope="all", reason="invalid")
    return PermanentSendError(str(status), detail, suppress=suppress)


def _error_text(body: bytes | str | None) -> str:
    if not body:
        return "no detail"
    text = body.decode(errors="replace") if isinstance(body, bytes) else body
    try:
        errors = json.loads(text).get("errors", [])
        return (
            "; ".join(
                f"{e.get('field') + ': ' if e.get('field') else ''}{e.get('message')}"
                for e in errors
            )
            or text
        )
    except (ValueError, AttributeError):
        return text[:500]
