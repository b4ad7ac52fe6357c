"""The one error model: what went wrong, as a client is told it.

Services raise these (or domain subclasses of them) directly, so the API renders them
without translating: every 4xx/5xx body is ``{"error": code, "detail": detail}``, plus
``fields`` when there are field errors and any ``extra`` keys. Layer-neutral on purpose: no
web framework here, so a service, an activity or a script can raise one; outside a request
it is an ordinary exception with a readable message.
"""

from __future__ import annotations

from typing import Any, ClassVar


class SutraError(Exception):
    """``status`` is the HTTP status, ``code`` the ``error`` string clients match on."""

    status: ClassVar[int] = 500
    code: ClassVar[str] = "internal_error"

    def __init__(
        self,
        detail: str,
        *,
        fields: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ):
        super().__init__(detail)
        self.detail = detail
        # Field errors as ``{"loc": [...], "msg": ...}``, the shape validation errors have.
        self.fields = fields
        self.headers = headers
        self.extra = extra


class BadRequest(SutraError):
    status, code = 400, "bad_request"


class MalformedJson(SutraError):
    status, code = 400, "malformed_json"


class Unauthorized(SutraError):
    status, code = 401, "unauthorized"


class Forbidden(SutraError):
    status, code = 403, "forbidden"


class NotFound(SutraError):
    status, code = 404, "not_found"


class Conflict(SutraError):
    status, code = 409, "conflict"


class PayloadTooLarge(SutraError):
    status, code = 413, "payload_too_large"


class Unprocessable(SutraError):
    status, code = 422, "validation_error"


class ServiceUnavailable(SutraError):
    status, code = 503, "service_unavailable"
