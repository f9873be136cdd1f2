"""The per-key checks of admission (`Pipeline.admit`), before anything is held or sent, and
their answers: 401 for an expired key, 403 for a model outside the key's list, 429 with
`Retry-After` and OpenAI's `x-ratelimit-*` headers over `rpm` or `tpm`, 403 naming the spend
limit a request's hold would pass (the reservation itself: spend.py, through the Meter).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from runtime.billing.credits import format_credits
from runtime.billing.prompt_bound import prompt_token_bound
from runtime.errors import GatewayError
from runtime.limits import rates
from runtime.limits.policy import KeyLimits

DEFAULT_OUTPUT_TOKENS = 4096
_OUTPUT_FIELDS = ("max_completion_tokens", "max_tokens", "max_output_tokens")


class KeyExpired(GatewayError):
    status = 401
    type = "authentication_error"

    def __init__(self, expired: datetime) -> None:
        super().__init__("This API key expired at "
                         f"{expired.astimezone(UTC).isoformat(timespec='seconds')}. "
                         "Ask for a new key or for this one to be extended.")


class ModelNotAllowed(GatewayError):
    status = 403
    type = "authorization_error"

    def __init__(self, model_id: str) -> None:
        super().__init__(f"This API key may not use the model '{model_id}'. List the models "
                         "it may use with GET /v1/models.", param="model",
                         code="model_not_allowed")


class RateLimited(GatewayError):
    status = 429
    type = "rate_limit_error"
    retryable = True

    def __init__(self, message: str, headers: Mapping[str, str]) -> None:
        super().__init__(message, code="rate_limit_exceeded", headers=headers)


class SpendLimitReached(GatewayError):
    status = 403
    type = "authorization_error"

    def __init__(self, limit: str, amount_nano: int) -> None:
        super().__init__(f"This request could cost up to {format_credits(amount_nano)} "
                         f"credits, more than what remains of this API key's {limit}. Ask "
                         "for the limit to be raised, or lower the request's max_tokens.",
                         code=limit.replace(" ", "_") + "_reached")


def check_expiry(limits: KeyLimits | None, now: datetime | None = None) -> None:
    if limits is not None and limits.expires_at is not None:
        if (now or datetime.now(UTC)) >= limits.expires_at:
            raise KeyExpired(limits.expires_at)


def check_models(limits: KeyLimits, asked: Iterable[Any], candidates: list[Any]) -> None:
    """403 for the first asked model (catalogue `Model`s the client named: the model and
    its own fallbacks) outside the list; catalogue fallbacks outside it are dropped from
    `candidates` in place."""
    for model in asked:
        if not limits.allows(model.id):
            raise ModelNotAllowed(model.id)
    candidates[:] = [m for m in candidates if limits.allows(m.id)]


def token_estimate(raw: bytes | None, body: Mapping[str, Any] | None,
                   max_output: int | None) -> int:
    """The request's tokens as its hold bounds them: the prompt bound (the body's bytes,
    images at their token count) and the output it allows."""
    if not raw or body is None:
        return 0
    asked = next((body[f] for f in _OUTPUT_FIELDS if isinstance(body.get(f), int)
                  and not isinstance(body.get(f), bool) and body[f] > 0), None)
    output = asked if asked is not None else (max_output or DEFAULT_OUTPUT_TOKENS)
    if max_output:
        output = min(output, max_output)
    return prompt_token_bound(raw, body) + output


def rate_headers(admitted: rates.Admitted) -> dict[str, str]:
    """OpenAI's x-ratelimit-* headers for the limits the key has."""
    headers: dict[str, str] = {}
    for kind, rate in (("requests", admitted.requests), ("tokens", admitted.tokens)):
        if rate is not None:
            headers[f"x-ratelimit-limit-{kind}"] = str(rate.limit)
            headers[f"x-ratelimit-remaining-{kind}"] = str(rate.remaining)
            headers[f"x-ratelimit-reset-{kind}"] = f"{rate.reset}s"
    return headers


def check_rates(counter: rates.RateCounter, key_id: str, limits: KeyLimits, tokens: int,
                now: float) -> rates.Admitted:
    """Count the request; 429 when over `rpm` or `tpm` (also when its estimate alone is
    more than `tpm`: it could never pass)."""
    if limits.tpm is not None and tokens > limits.tpm:
        raise RateLimited(
            f"This request may use up to {tokens} tokens (prompt and max output), more than "
            f"this API key's limit of {limits.tpm} tokens per minute. Lower max_tokens.",
            {"x-ratelimit-limit-tokens": str(limits.tpm)})
    admitted = counter.admit(key_id, limits.rpm, limits.tpm, tokens, now)
    if admitted.refused is None:
        return admitted
    headers = rate_headers(admitted)
    headers["Retry-After"] = str(admitted.retry_after)
    if admitted.refused == "rpm":
        message = (f"Rate limit reached: this API key may make {limits.rpm} requests per "
                   f"minute. Retry after {admitted.retry_after} s.")
    else:
        message = (f"Rate limit reached: this API key may use {limits.tpm} tokens per "
                   f"minute and this request may use up to {tokens}. Retry after "
                   f"{admitted.retry_after} s.")
    raise RateLimited(message, headers)
