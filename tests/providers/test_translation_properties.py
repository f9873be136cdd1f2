"""Properties of the request translators to Anthropic and Gemini, over generated OpenAI chat
requests that the generated OpenAI model accepts:

* a conversation the providers can express (tool results after their calls, parameters in
  the providers' ranges) always translates: no exception, the result is valid against the
  generated native model, and no message is dropped (every text, tool call and tool result
  arrives upstream, in order);
* any valid request, supported or not, either translates or is a 400 naming a field; no
  other exception (which would be a 500) escapes.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from generated.models import anthropic as anthropic_models
from generated.models import gemini as gemini_models
from generated.models import openai as openai_models
from runtime.catalogue import load_catalogue
from runtime.errors import BadRequest
from runtime.ops import MappingError
from runtime.providers import CHAT_ADAPTERS

CATALOGUE = load_catalogue(env={"ANTHROPIC_API_KEY": "k", "GOOGLE_API_KEY": "k"})
MODELS = {"anthropic": CATALOGUE.get("anthropic/claude-sonnet-4-5"),
          "gemini": CATALOGUE.get("google/gemini-2.0-flash")}
NATIVE = {"anthropic": anthropic_models.CreateMessageRequest,
          "gemini": gemini_models.GenerateContentRequest}
PNG = ("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQ"
       "AAAABJRU5ErkJggg==")
TOOLS = ("get_weather", "get_time", "lookup")

texts = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1,
                max_size=30).filter(lambda s: s.strip())
text_parts = st.lists(texts.map(lambda t: {"type": "text", "text": t}), min_size=1, max_size=3)
image_part = st.just({"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}})
user_content = st.one_of(texts, st.lists(st.one_of(texts.map(lambda t: {"type": "text",
                                                                         "text": t}),
                                                   image_part), min_size=1, max_size=3))
arguments = st.dictionaries(st.sampled_from(["city", "n", "flag"]),
                            st.one_of(st.integers(-5, 5), texts, st.booleans()), max_size=3)


@st.composite
def conversations(draw: Any) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    if draw(st.booleans()):
        messages.append({"role": draw(st.sampled_from(["system", "developer"])),
                         "content": draw(st.one_of(texts, text_parts))})
    messages.append({"role": "user", "content": draw(user_content)})
    for turn in range(draw(st.integers(0, 3))):
        calls = [{"id": f"call_{turn}_{k}", "type": "function",
                  "function": {"name": draw(st.sampled_from(TOOLS)),
                               "arguments": json.dumps(draw(arguments))}}
                 for k in range(draw(st.integers(0, 2)))]
        assistant: dict[str, Any] = {"role": "assistant",
                                     "content": draw(st.one_of(texts, text_parts))
                                     if not calls or draw(st.booleans()) else None}
        if calls:
            assistant["tool_calls"] = calls
        messages.append(assistant)
        for call in calls:
            messages.append({"role": "tool", "tool_call_id": call["id"],
                             "content": draw(st.one_of(texts, text_parts))})
        if draw(st.booleans()) or not calls:
            messages.append({"role": "user", "content": draw(user_content)})
    return messages


@st.composite
def supported_requests(draw: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"model": "m", "messages": draw(conversations())}
    optional = {
        "temperature": st.floats(0, 1), "top_p": st.floats(0, 1),
        "max_tokens": st.integers(1, 4000), "max_completion_tokens": st.integers(1, 4000),
        "stop": st.one_of(texts, st.lists(texts, min_size=1, max_size=4)),
        "user": texts, "seed": st.integers(0, 99), "n": st.just(1),
        "presence_penalty": st.just(0), "parallel_tool_calls": st.booleans(),
        "response_format": st.sampled_from([
            {"type": "text"}, {"type": "json_object"},
            {"type": "json_schema", "json_schema": {"name": "s", "schema": {
                "type": "object", "properties": {"a": {"type": ["string", "null"]}}}}}]),
    }
    for name, strategy in optional.items():
        if draw(st.booleans()):
            body[name] = draw(strategy)
    if draw(st.booleans()):
        body["tools"] = [{"type": "function", "function": {
            "name": name, "parameters": {"type": "object", "properties": {
                "city": {"type": "string"}}}}} for name in TOOLS]
        body["tool_choice"] = draw(st.sampled_from([
            "auto", "none", "required", {"type": "function", "function": {"name": "lookup"}}]))
    return body


def expected_pieces(messages: list[dict[str, Any]]) -> list[str]:
    """Every piece of content of the conversation, in order, as the upstream must carry it."""
    pieces = []
    for msg in messages:
        content = msg.get("content")
        if isinstance(content, str):
            pieces.append(content)
        elif isinstance(content, list):
            pieces += [p["text"] if p["type"] == "text" else PNG for p in content]
        for call in msg.get("tool_calls") or ():
            pieces.append(call["function"]["name"])
    return pieces


def carried(dialect: str, body: dict[str, Any]) -> list[str]:
    out = []
    if dialect == "anthropic":
        out += [b["text"] for b in body.get("system") or ()]
        for msg in body["messages"]:
            for block in msg["content"]:
                if block["type"] == "text":
                    out.append(block["text"])
                elif block["type"] == "image":
                    out.append(block["source"]["data"])
                elif block["type"] == "tool_use":
                    out.append(block["name"])
                elif block["type"] == "tool_result":
                    out.append(block["content"])
    else:
        out += [p["text"] for p in (body.get("systemInstruction") or {}).get("parts") or ()]
        for content in body["contents"]:
            for part in content["parts"]:
                if "text" in part:
                    out.append(part["text"])
                elif "inlineData" in part:
                    out.append(part["inlineData"]["data"])
                elif "functionCall" in part:
                    out.append(part["functionCall"]["name"])
                else:
                    response = part["functionResponse"]["response"]
                    out.append(json.dumps(response))
    return out


def _all_carried(messages: list[dict[str, Any]], dialect: str, body: dict[str, Any]) -> None:
    blob = json.dumps(body, ensure_ascii=False)
    got = carried(dialect, body)
    for piece in expected_pieces(messages):
        # system text may be hoisted, tool results reshaped into objects: find each piece
        assert piece in blob or any(piece in g for g in got) or json.dumps(
            piece, ensure_ascii=False)[1:-1] in blob, piece
    for msg in messages:
        if msg["role"] == "tool":
            content = msg["content"]
            text = content if isinstance(content, str) else "\n".join(
                p["text"] for p in content)
            assert text in blob or json.dumps(text, ensure_ascii=False)[1:-1] in blob


def _translate(dialect: str, body: dict[str, Any]) -> dict[str, Any]:
    call = CHAT_ADAPTERS[dialect].build(json.loads(json.dumps(body)), MODELS[dialect], False)
    return json.loads(call.body)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(supported_requests())
def test_supported_requests_translate_without_loss(body: dict[str, Any]) -> None:
    openai_models.CreateChatCompletionRequest.model_validate(body, strict=True)
    for dialect in ("anthropic", "gemini"):
        native = _translate(dialect, body)
        NATIVE[dialect].model_validate(native)
        _all_carried(body["messages"], dialect, native)
        if dialect == "anthropic":
            roles = [m["role"] for m in native["messages"]]
            assert all(a != b for a, b in zip(roles, roles[1:], strict=False))
            assert native["max_tokens"] >= 1
        else:
            assert {c["role"] for c in native["contents"]} <= {"user", "model"}


anything = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(-3, 3), texts),
                        lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                st.dictionaries(texts, inner, max_size=3)),
                        max_leaves=6)


@st.composite
def any_valid_requests(draw: Any) -> dict[str, Any]:
    body = draw(supported_requests())
    extras = {
        "n": st.integers(1, 10), "temperature": st.floats(0, 2), "logprobs": st.booleans(),
        "top_logprobs": st.integers(0, 20), "logit_bias": st.just({"5": 1}),
        "presence_penalty": st.floats(-2, 2), "frequency_penalty": st.floats(-2, 2),
        "reasoning_effort": st.sampled_from(["none", "minimal", "low", "medium", "high",
                                             "xhigh", "odd"]),
        "modalities": st.sampled_from([["text"], ["text", "audio"]]),
        "service_tier": st.sampled_from(["auto", "default", "flex"]),
        "metadata": st.dictionaries(texts, texts, max_size=2), "verbosity": st.just("low"),
        "top_k": st.integers(0, 50), "store": st.booleans(), "extra_field": anything,
    }
    for name, strategy in extras.items():
        if draw(st.integers(0, 3)) == 0:
            body[name] = draw(strategy)
    if draw(st.integers(0, 4)) == 0:
        body["messages"].append({"role": "tool", "tool_call_id": "nobody", "content": "x"})
    return body


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(any_valid_requests())
def test_any_valid_request_translates_or_is_a_400_naming_a_field(body: dict[str, Any]) -> None:
    try:
        openai_models.CreateChatCompletionRequest.model_validate(body, strict=True)
    except ValueError:
        assume(False)
    for dialect in ("anthropic", "gemini"):
        try:
            _translate(dialect, body)
        except BadRequest as exc:
            assert exc.status == 400 and exc.param
        except MappingError as exc:
            assert exc.param
