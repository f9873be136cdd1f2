"""The pipeline's contracts without a server: every endpoint has a route or a resource, every
(dialect, endpoint) pair a descriptor declares has an adapter, adapters never change the
client's request, and holds are computed from the request as the client sent it."""

from __future__ import annotations

import copy
import json

import pytest

from generated import registry
from runtime.billing.pricing import chat_worst_case
from runtime.billing.prompt_bound import prompt_token_bound
from runtime.catalogue import load_catalogue
from runtime.clients import chat
from runtime.pipeline.route import Request
from runtime.providers import CHAT_ADAPTERS, SERVED
from runtime.resources import RESOURCES, ROUTES

ENV = {f"{p.upper()}_API_KEY": "k" for p in ("openai", "anthropic", "google", "mistral")}
CATALOGUE = load_catalogue(env=ENV, registry=registry)


def test_every_endpoint_has_a_route_or_a_resource():
    for kind in registry.ENDPOINTS:
        assert (kind in ROUTES) != (kind in RESOURCES), kind
    assert set(ROUTES) | set(RESOURCES) == set(registry.ENDPOINTS)


def test_every_declared_dialect_endpoint_has_an_adapter():
    # The model listing is served from the catalogue, never by calling a provider.
    for dialect, kinds in registry.DIALECT_ENDPOINTS.items():
        assert set(kinds) - {"models"} <= SERVED.get(dialect, set()), dialect
    for pid, desc in registry.DESCRIPTORS.items():
        if getattr(desc, "abstract", False):
            continue
        missing = set(desc.endpoints) - {"models"} - SERVED.get(desc.dialect, set())
        assert not missing, f"{pid} ({desc.dialect}) declares {missing} without an adapter"


REQUEST = {
    "model": "x", "n": 4, "max_tokens": 100, "stop": "END", "temperature": 0.5,
    "stream_options": {"include_usage": True}, "stream": True,
    "messages": [{"role": "system", "content": "be brief"},
                 {"role": "user", "content": [{"type": "text", "text": "hi"}]}],
    "tools": [{"type": "function", "function": {"name": "f", "parameters": {
        "type": "object", "properties": {}}}}],
}


@pytest.mark.parametrize("dialect", sorted(CHAT_ADAPTERS))
def test_chat_adapters_never_change_the_request(dialect):
    model = next(m for m in CATALOGUE.models.values()
                 if m.provider.descriptor.dialect == dialect and "chat" in m.endpoints)
    body = dict(copy.deepcopy(REQUEST), n=1)
    before = copy.deepcopy(body)
    CHAT_ADAPTERS[dialect].build(body, model, True)
    assert body == before


@pytest.mark.parametrize("body, per_choice", [
    ({"n": 8, "max_completion_tokens": 65536}, 8192),   # capped at the model's limit
    ({"n": 4, "max_tokens": 100}, 100),
])
def test_gemini_hold_counts_every_choice_from_the_request_as_sent(body, per_choice):
    model = CATALOGUE.get("google/gemini-2.0-flash")
    body = {"model": model.id, "messages": [{"role": "user", "content": "hi"}], **body}
    raw = json.dumps(body).encode()
    request = Request(model_id=model.id, raw=raw, body=body)
    expected = chat_worst_case(model, prompt_token_bound(raw, body), per_choice * body["n"])
    assert chat.hold(request, model) == expected
    chat.ChatExchange(request, model, model.id)     # translating for Gemini changes nothing
    assert chat.hold(request, model) == expected
    assert request.body["n"] == body["n"]
