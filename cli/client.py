"""The CLI's one way to the API: configuration, requests, and errors as exit codes."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

DEFAULT_URL = "http://127.0.0.1:8000"
# Where `make run` writes the admin key it prints, relative to the checkout it runs in.
ADMIN_KEY_FILE = Path("var") / "admin-key"

# Exit codes: 0 done; 2 bad usage (typer's own); the API refused (4xx); the API failed or is
# not ready (5xx); no answer at all (connection refused, timeout, bad URL).
EXIT_REFUSED = 4
EXIT_FAILED = 5
EXIT_UNREACHABLE = 6


class CliError(Exception):
    """What the command prints on stderr before it exits with ``exit_code``."""

    def __init__(self, message: str, exit_code: int, body: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code
        self.body = body


def default_key() -> str | None:
    key = os.environ.get("SUTRA_API_KEY")
    if key:
        return key
    try:
        return ADMIN_KEY_FILE.read_text().strip() or None
    except OSError:
        return None


@dataclass
class Api:
    url: str
    key: str | None
    timeout: float = 30.0

    def request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        body: Any = None,
    ) -> Any:
        headers = {"Accept": "application/json"}
        if self.key:
            headers["Authorization"] = f"Bearer {self.key}"
        query = {k: v for k, v in (params or {}).items() if v is not None}
        try:
            response = httpx.request(
                method,
                self.url.rstrip("/") + path,
                params=query,
                json=body,
                headers=headers,
                timeout=self.timeout,
            )
        except httpx.HTTPError as exc:
            raise CliError(
                f"cannot reach Sutra at {self.url}: {exc or type(exc).__name__}"
                " (is it running? set SUTRA_API_URL or --api-url)",
                EXIT_UNREACHABLE,
            ) from exc
        if response.status_code >= 400:
            raise _error(response)
        if not response.content:
            return None
        return response.json()


def _error(response: httpx.Response) -> CliError:
    status = response.status_code
    try:
        body: Any = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and "detail" in body:
        detail = str(body["detail"])
        code = body.get("error")
        message = f"{status} {code}: {detail}" if code else f"{status}: {detail}"
        for field in body.get("fields") or ():
            loc = ".".join(str(part) for part in field.get("loc", ()))
            message += f"\n  {loc}: {field.get('msg')}"
    else:
        message = f"{status}: {response.text.strip()[:500] or response.reason_phrase}"
    if status == 401:
        message += "\n  (set SUTRA_API_KEY or --api-key; `make run` keeps one in var/admin-key)"
    return CliError(message, EXIT_REFUSED if status < 500 else EXIT_FAILED, body)
