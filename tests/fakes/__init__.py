"""Fake upstream provider servers for tests, listening on 127.0.0.1.

Contract: each fake is a real HTTP server in a background thread of the test process that
behaves like one provider's API (strict validation, real SSE framing) so gateway tests never
reach the internet. ``FakeOpenAI`` covers OpenAI and OpenAI-compatible chat providers
(``tests.fakes.openai_upstream``); ``tests.fakes.sse`` holds the SSE helpers every fake shares;
``free_port()`` returns a TCP port on 127.0.0.1 that was free a moment ago, for processes (such
as a gateway under gunicorn) that must be told their port before they start.
"""

from __future__ import annotations

import socket

from .openai_upstream import DEFAULT_KNOWN_FIELDS, FakeOpenAI, Received, error_envelope

__all__ = ["DEFAULT_KNOWN_FIELDS", "FakeOpenAI", "Received", "error_envelope", "free_port"]


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that is free now (another process may take it before you bind)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])
