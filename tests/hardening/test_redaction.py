"""Masking the operator's identifiers out of error text (runtime/redaction.py)."""

from __future__ import annotations

import json
import time

import pytest

from runtime import redaction
from runtime.errors import GatewayError, render_error
from runtime.providers.base import StreamBroken

CONFIGURED = "op-secret-Zq81Lm0Pq7Rt5Vx2"


@pytest.fixture(autouse=True)
def configured_key():
    redaction.register_secrets([CONFIGURED, "short"])


@pytest.mark.parametrize("leak", [
    "org-Vx3kQ9aLm2Pz7RtY8wBn4CdE",
    "proj_Ab12Cd34Ef56Gh78",
    "user-9fKq2LmZp0Xw",
    "sk-ab***yz",
    "sk-ab*************************yz",
    "sk-proj-Ab12Cd34Ef56Gh78Ij90",
    "sk-ant-api03-Zx9Yw8Vu7Ts6Rq5Po4Nm3Lk2Ji1Hg0",
    "sk-or-v1-0123456789abcdef0123456789abcdef",
    "AIzaSyA1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q",
    "gsk_AbCdEf0123456789AbCdEf",
    "xai-AbCdEf0123456789AbCdEf",
    "********************1234",
    "ops@acme-corp.example.com",
    CONFIGURED,
])
def test_each_identifier_is_masked(leak):
    text = f"Problem with {leak}. Please check."
    masked = redaction.mask(text)
    assert leak not in masked
    assert masked == "Problem with [redacted]. Please check."


def test_ordinary_text_is_untouched():
    text = ("Invalid 'messages[0].content': org-specific risk-free user-provided input; "
            "max_tokens is too large; the model 'gpt-4o-mini' does not exist. short")
    assert redaction.mask(text) == text


def test_masking_twice_is_masking_once():
    once = redaction.mask("key sk-ab***yz of org-Vx3kQ9aLm2Pz7RtY")
    assert redaction.mask(once) == once


def test_json_body_is_masked_and_kept_otherwise():
    body = {"error": {"message": "Incorrect API key provided: sk-ab***yz (org-Vx3kQ9aLm2Pz)",
                      "type": "invalid_request_error", "param": None, "code": "x"}}
    raw = json.dumps(body).encode()
    masked = json.loads(redaction.mask_body(raw))
    assert masked["error"]["message"] == "Incorrect API key provided: [redacted] ([redacted])"
    assert masked["error"]["type"] == "invalid_request_error"
    clean = b'{"error": {"message": "fine"}}'
    assert redaction.mask_body(clean) is clean
    assert redaction.mask_body(b"<html>sk-ab***yz</html>") == b"<html>[redacted]</html>"


def test_gateway_errors_and_stream_errors_carry_masked_text():
    err = GatewayError(f"quota of org-Vx3kQ9aLm2Pz7RtY exceeded, key {CONFIGURED}", status=429,
                       body=json.dumps({"error": {"message": "ops@acme.example"}}).encode())
    assert "org-" not in err.message and CONFIGURED not in err.message
    assert b"acme" not in render_error(err)
    err.body = None
    err.message = "Incorrect API key provided: sk-ab***yz"
    assert "sk-ab" not in render_error(err, "anthropic").decode()
    assert StreamBroken("project proj_Ab12Cd34Ef56").message == "project [redacted]"


@pytest.mark.parametrize("blob", ["A" * 200_000, "a.b-" * 50_000, "org-" * 50_000,
                                  "x@y." * 50_000, "ab*" * 60_000])
def test_long_bodies_without_identifiers_are_masked_in_linear_time(blob):
    """An upstream error page holding a long token (a base64 blob) cannot stall a worker:
    the patterns never rescan a token from each of its characters (that took minutes)."""
    started = time.perf_counter()
    redaction.mask(f"error: {blob} end")
    assert time.perf_counter() - started < 2.0
