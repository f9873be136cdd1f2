"""One fixture format and one runner for the translators: tests/fixtures/<translator>/*.json.

Translators, by fixture directory:
* anthropic, gemini: the chat adapters of runtime.providers (OpenAI chat <-> the native API);
* messages: runtime.clients.messages_translation (Anthropic Messages <-> OpenAI chat).

Each file says what it shows in `about`, names the catalogue `model` where the translation
depends on it, and has a `kind`:
* request: the client's `request` -> the `upstream` call it becomes (`url` and `params` for
  provider adapters, and the `body`), or `error` {param} when it is refused with a 400.
  A provider adapter's request must be valid against the generated OpenAI model and its body
  against the generated model of the native request;
* response: an `upstream` answer -> what the `client` gets;
* stream: the `upstream` stream (a provider's SSE body as sent, framing included; OpenAI chat
  chunks for the messages translator) -> what the `client` gets (OpenAI chunks and
  `{"error": ...}` last when the stream ends with an error; Anthropic events as [name, data]);
* error: a native error (`status`, `headers`, `upstream` body) -> the `client` status,
  message, type and headers.
The messages translator also takes the request's `cost`, which it writes into its answer, and
`carry`, the provider dialect whose reasoning state its thinking blocks carry (none by default).

Per-response values are not compared: the top-level `id` and `created`, ids the gateway
makes up for Gemini function calls (written `call_gx*`) and message ids (`msg_...`, written
`*`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from generated.models import anthropic as anthropic_models
from generated.models import gemini as gemini_models
from generated.models import openai as openai_models
from runtime.billing.pricing import Usage
from runtime.catalogue import load_catalogue
from runtime.clients import messages_translation
from runtime.errors import BadRequest
from runtime.providers import CHAT_ADAPTERS
from runtime.providers.base import StreamBroken
from runtime.providers.chat_parts import EARLY_USAGE
from runtime.sse import iter_events

FIXTURES = Path(__file__).resolve().parent / "fixtures"
NATIVE_REQUEST = {"anthropic": anthropic_models.CreateMessageRequest,
                  "gemini": gemini_models.GenerateContentRequest}
CATALOGUE = load_catalogue(env={"ANTHROPIC_API_KEY": "k", "GOOGLE_API_KEY": "k"})


def files(*translators: str) -> list[Path]:
    return sorted(path for name in translators for path in FIXTURES.glob(f"{name}/*.json"))


def load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


MADE_UP_IDS = {"provider": ("call_gx", "call_gx*"), "messages": ("msg_", "*")}


def comparable(obj: Any, top: bool = True, made_up: tuple[str, str] = MADE_UP_IDS["provider"]
               ) -> Any:
    """Without the per-response values (see the module's docstring): the top-level `id` and
    `created` when `top`, and ids starting with made_up[0] written made_up[1]; a chunk's
    EARLY_USAGE is the meter's, never sent to the client, and left out too."""
    if isinstance(obj, dict):
        out = {k: comparable(v, False, made_up) for k, v in obj.items()
               if not (top and k in ("id", "created", EARLY_USAGE))}
        if isinstance(out.get("id"), str) and out["id"].startswith(made_up[0]):
            out["id"] = made_up[1]
        return out
    if isinstance(obj, list):
        return [comparable(v, top, made_up) for v in obj]
    return obj


def check(path: Path) -> None:
    """Run one fixture file through its translator."""
    fx = load(path)
    if path.parent.name == "messages":
        _check_messages(fx)
    else:
        _check_provider(fx)


def _check_provider(fx: dict[str, Any]) -> None:
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


def _check_messages(fx: dict[str, Any]) -> None:
    translate = messages_translation
    if fx["kind"] == "request":
        if "error" in fx:
            with pytest.raises(BadRequest) as info:
                translate.to_openai(fx["request"], fx.get("carry"))
            assert info.value.param == fx["error"]["param"]
        else:
            dropped: list[str] = []
            body = translate.to_openai(fx["request"], fx.get("carry"),
                                       fx.get("can_search", False), dropped)
            got = {"body": body, **({"dropped": dropped} if dropped else {})}
            assert got == fx["upstream"]
    elif fx["kind"] == "response":
        completion = fx["upstream"]
        usage = Usage.from_openai(completion["usage"])
        message = translate.to_message(completion, fx["model"], usage, fx["cost"],
                                       fx.get("carry"))
        assert comparable(message, False, MADE_UP_IDS["messages"]) == fx["client"]
    else:
        writer = translate.EventWriter(fx["model"], fx.get("carry"))
        out: list[bytes] = []
        usage = Usage()
        for chunk in fx["upstream"]:
            out.extend(writer.chunk(chunk))
            if isinstance(chunk.get("usage"), dict):
                usage = Usage.from_openai(chunk["usage"])
        out.extend(writer.end(usage, fx["cost"]))
        events = [[e.event, json.loads(e.data)] for e in iter_events([b"".join(out)])]
        assert comparable(events, False, MADE_UP_IDS["messages"]) == fx["client"]
