"""The GatewayError family: every failure the gateway answers, in OpenAI's envelope."""

from __future__ import annotations

from typing import Any

import orjson


# OpenAI's own bodies: every 4xx but 429 is `invalid_request_error` (401 invalid_api_key,
# 403 and 404 model_not_found, 404 unknown URL alike); a 429 says which limit, `requests`
# or `tokens` (`insufficient_quota` for a spent quota); a 5xx is `server_error`.
def error_type_for(status: int) -> str:
    if status >= 500:
        return "server_error"
    return "requests" if status == 429 else "invalid_request_error"


def envelope(
    message: str, *, type: str, code: str | None = None, param: str | None = None
) -> dict[str, Any]:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


class GatewayError(Exception):
    """An error answered to the client as `{"error": {...}}` with `status`."""

    status = 500
    code: str | None = "internal_error"

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        param: str | None = None,
        type: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status
        if code is not None:
            self.code = code
        self.param = param
        self.type = type or error_type_for(self.status)
        self.headers = headers or {}

    def to_dict(self) -> dict[str, Any]:
        return envelope(self.message, type=self.type, code=self.code, param=self.param)

    def to_bytes(self) -> bytes:
        return orjson.dumps(self.to_dict())


class InvalidRequest(GatewayError):
    status = 400
    code = "invalid_request"


class AuthenticationFailed(GatewayError):
    status = 401
    code = "invalid_api_key"


class PermissionDenied(GatewayError):
    status = 403
    code = "permission_denied"


class ModelNotAllowed(GatewayError):
    status = 403
    code = "model_not_allowed"


class RateLimited(GatewayError):
    status = 429
    code = "rate_limit_exceeded"


class QuotaExceeded(GatewayError):
    """A monthly budget is spent (OpenAI's own code for an exhausted quota)."""

    status = 429
    code = "insufficient_quota"


class StateUnavailable(GatewayError):
    """Shared state (Redis) is down and state.on_redis_error is `deny`."""

    status = 503
    code = "state_unavailable"


class PrivacyBlocked(GatewayError):
    status = 400
    code = "privacy_blocked"


class RequestBlocked(GatewayError):
    """A routing rule with `block`."""

    status = 403
    code = "request_blocked"


class KeptLocal(GatewayError):
    """A request the privacy policy keeps local, with no local provider able to serve it."""

    status = 503
    code = "kept_local"


class NotFound(GatewayError):
    status = 404
    code = "not_found"


class ModelNotFound(GatewayError):
    status = 404
    code = "model_not_found"


class MethodNotAllowed(GatewayError):
    status = 405
    code = "method_not_allowed"


class PayloadTooLarge(GatewayError):
    status = 413
    code = "payload_too_large"


class UpstreamError(GatewayError):
    """The upstream could not be reached or failed before answering."""

    status = 502
    code = "upstream_error"


class ProviderUnavailable(GatewayError):
    status = 503
    code = "provider_unavailable"


class CircuitOpen(GatewayError):
    """The provider's circuit breaker is open: failing fast instead of calling it."""

    status = 503
    code = "provider_circuit_open"


class UpstreamTimeout(GatewayError):
    status = 504
    code = "upstream_timeout"
