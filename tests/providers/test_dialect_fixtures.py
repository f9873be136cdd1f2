"""Fixture files of the translating chat dialects (tests/fixtures/<dialect>/*.json), run by
one parametrised test. Each file says what it shows in `about` and has a `kind`:

* request: an OpenAI chat `request` (valid against the generated OpenAI model) -> the
  `upstream` call (path, query, body); the body must also be valid against the generated
  model of the native request;
* response: a native `upstream` answer -> the OpenAI `client` completion;
* stream: a native `upstream` SSE body (as sent, framing included) -> the OpenAI `client`
  chunks, and `{"error": ...}` last when the stream ends with an error;
* error: a native error (`status`, `headers`, `upstream` body) -> the `client` status,
  message, type and headers.

Per-response values are not compared: the top-level `id` and `created`, and ids the gateway
makes up for Gemini function calls (written `call_gx*`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from generated.models import anthropic as anthropic_models
from generated.models import gemini as gemini_models
from generated.models import openai as openai_models
from runtime.catalogue import load_catalogue
from runtime.providers import CHAT_ADAPTERS
from runtime.providers.base import StreamBroken
from runtime.sse import iter_events

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
FILES = sorted([*FIXTURES.glob("anthropic/*.json"), *FIXTURES.glob("gemini/*.json")])
NATIVE_REQUEST = {"anthropic": anthropic_models.CreateMessageRequest,
                  "gemini": gemini_models.GenerateContentRequest}
CATALOGUE = load_catalogue(env={"ANTHROPIC_API_KEY": "k", "GOOGLE_API_KEY": "k"})


def comparable(obj: Any, top: bool = True) -> Any:
    if isinstance(obj, dict):
        out = {k: comparable(v, False) for k, v in obj.items()
               if not (top and k in ("id", "created"))}
        if isinstance(out.get("id"), str) and out["id"].startswith("call_gx"):
            out["id"] = "call_gx*"
        return out
    if isinstance(obj, list):
        return [comparable(v, top) for v in obj]
    return obj


@pytest.mark.parametrize("path", FILES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_fixture(path: Path) -> None:
    fx = json.loads(path.read_text())
    model = CATALOGUE.get(fx["model"])
    dialect = model.provider.descriptor.dialect
    adapter = CHAT_ADAPTERS[dialect]
    kind = fx["kind"]
    if kind == "request":
        openai_models.CreateChatCompletionRequest.model_validate(fx["request"], strict=True)
        call = adapter.build(json.loads(json.dumps(fx["request"])), model,
                             fx.get("stream", False))
        body = json.loads(call.body)
        NATIVE_REQUEST[dialect].model_validate(body)
        assert call.url == model.provider.base_url + fx["upstream"]["url"]
        assert call.params == fx["upstream"]["params"]
        assert body == fx["upstream"]["body"]
    elif kind == "response":
        assert comparable(adapter.parse(fx["upstream"], model)) == fx["client"]
    elif kind == "stream":
        got = []
        try:
            for chunk in adapter.chunks(iter_events([fx["upstream"].encode()]), model):
                got.append(comparable(chunk))
        except StreamBroken as exc:
            got.append({"error": {"message": exc.message, "type": exc.type}})
        assert got == fx["client"]
    else:
        err = adapter.error(fx["status"], json.dumps(fx["upstream"]).encode(),
                            fx.get("headers", {}), model)
        assert {"status": err.status, "message": err.message, "type": err.type,
                "headers": err.headers} == fx["client"]


def test_streams_split_anywhere_give_the_same_chunks() -> None:
    """SSE bytes arrive in arbitrary pieces; CRLF may be split between two reads."""
    for path in FILES:
        fx = json.loads(path.read_text())
        if fx["kind"] != "stream" or fx["client"][-1].get("error"):
            continue
        model = CATALOGUE.get(fx["model"])
        adapter = CHAT_ADAPTERS[model.provider.descriptor.dialect]
        raw = fx["upstream"].encode()
        pieces = [raw[i:i + 7] for i in range(0, len(raw), 7)]
        got = [comparable(c) for c in adapter.chunks(iter_events(pieces), model)]
        assert got == fx["client"], path.name
