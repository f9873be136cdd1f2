"""The gateway's one error family and its rendering in the client's dialect.

Every failure a client can see is a `GatewayError` (or a subclass) carrying the HTTP
status, a message safe to show (never a secret), the OpenAI-style `type`, the field `param`
it concerns and extra response headers (Retry-After). `render_error` turns it into the
OpenAI/TokModel envelope `{"error":{"message","type","param","code"}}` or, for the
Anthropic Messages dialect, `{"type":"error","error":{"type","message"}}`.

Nothing of the operator leaks: an error's `message` and kept `body` are masked
(runtime/redaction.py) as they are set, so every way out -- the non-stream envelope, the
error events of every stream format, and any code that reads `err.message` later -- carries
the masked text. A provider's stream error (`StreamBroken`) is masked the same way.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from runtime.redaction import mask, mask_body

OPENAI = "openai"
ANTHROPIC = "anthropic"

# Anthropic's own error types by status, used when the client speaks Messages.
_ANTHROPIC_TYPES = {400: "invalid_request_error", 401: "authentication_error",
                    403: "permission_error", 404: "not_found_error", 413: "request_too_large",
                    429: "rate_limit_error", 500: "api_error", 502: "api_error",
                    503: "overloaded_error", 504: "api_error"}


class GatewayError(Exception):
    """An error answered to the client. `body` replaces the envelope when an upstream of the
    client's own dialect already produced one (kept byte for byte once masked)."""

    status = 500
    type = "server_error"
    # False when retrying cannot help (told to SDKs with `x-should-retry: false`)
    retryable: bool | None = None

    def __init__(self, message: str, *, status: int | None = None, type: str | None = None,
                 param: str | None = None, code: int | str | None = None,
                 headers: Mapping[str, str] | None = None, body: bytes | None = None) -> None:
        self.message = message
        super().__init__(self.message)
        if status is not None:
            self.status = status
        if type is not None:
            self.type = type
        self.param = param
        self.code = code if code is not None else self.status
        self.headers = dict(headers or {})
        self.body = body

    @property
    def message(self) -> str:
        return self._message

    @message.setter
    def message(self, text: str) -> None:
        self._message = mask(text)

    @property
    def body(self) -> bytes | None:
        return self._body

    @body.setter
    def body(self, raw: bytes | None) -> None:
        self._body = None if raw is None else mask_body(raw)


class BadRequest(GatewayError):
    status = 400
    type = "invalid_request_error"


class Unauthorized(GatewayError):
    status = 401
    type = "authentication_error"

    def __init__(self) -> None:
        super().__init__("Invalid or missing API key.")


class InsufficientCredits(GatewayError):
    status = 403
    type = "authorization_error"

    def __init__(self) -> None:
        super().__init__("Insufficient credits. Please top up your account balance.")


class AccountInDebt(GatewayError):
    """The account owes credits (a request cost more than its hold and balance): refused
    until a top-up pays the debt."""

    status = 403
    type = "authorization_error"

    def __init__(self, debt_text: str) -> None:
        super().__init__(f"This account has a debt of {debt_text} credits from requests that "
                         "cost more than its balance. Please top up your account balance to "
                         "pay the debt.")


class AccountDisabled(GatewayError):
    """The key is live but an operator disabled its account: every endpoint refuses it."""

    status = 403
    type = "authorization_error"
    retryable = False

    def __init__(self) -> None:
        super().__init__("This account is disabled. Contact the gateway's operator.",
                         code="account_disabled")


class NotFound(GatewayError):
    status = 404
    type = "not_found_error"


class PayloadTooLarge(GatewayError):
    status = 413
    type = "invalid_request_error"


class UpstreamError(GatewayError):
    """The provider failed, timed out, or answered something unusable."""

    status = 502
    type = "upstream_error"


def envelope(err: GatewayError, dialect: str = OPENAI) -> dict:
    if dialect == ANTHROPIC:
        return {"type": "error",
                "error": {"type": _ANTHROPIC_TYPES.get(err.status, "api_error"),
                          "message": err.message}}
    return {"error": {"message": err.message, "type": err.type, "param": err.param,
                      "code": err.code}}


def render_error(err: GatewayError, dialect: str = OPENAI) -> bytes:
    if err.body is not None:
        return err.body
    return json.dumps(envelope(err, dialect)).encode()
