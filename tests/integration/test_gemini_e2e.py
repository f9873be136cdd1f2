"""OpenAI clients reaching a Gemini model end to end: the official openai SDK -> the gateway
under gunicorn -> a strict fake Gemini API (and a small image host for URL images). Checks
what reached Gemini, what the client got, and the exact charge (usage x catalogue prices,
computed independently).
"""

from __future__ import annotations

import base64
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import openai
import pytest

from tests.fakes.gemini_upstream import FakeGemini
from tests.harness import charged
from tests.pricing_oracle import chat_cost_nano, credits

pytestmark = pytest.mark.integration

MODEL = "google/gemini-2.0-flash"
KEY = "gemini-upstream-key"
PNG_BYTES = b"\x89PNG\r\n\x1a\n" + bytes(40)
PNG = base64.b64encode(PNG_BYTES).decode()
WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"], "additionalProperties": False}}}
IMAGES = {"/cat.png": ("image/png", PNG_BYTES), "/big.png": ("image/png", bytes(5000)),
          "/page.html": ("text/html", b"<html></html>")}


class _ImageHost(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        found = IMAGES.get(self.path)
        if found is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", found[0])
        self.send_header("Content-Length", str(len(found[1])))
        self.end_headers()
        self.wfile.write(found[1])

    def log_message(self, *args) -> None:
        return


@pytest.fixture(scope="module")
def image_host():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _ImageHost)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def fakes(start_fakes):
    return start_fakes(FakeGemini(api_key=KEY, models=("gemini-2.0-flash",)))


@pytest.fixture(scope="module")
def gw(fakes, gateway_factory):
    return gateway_factory("gw-gemini", {
        "GOOGLE_BASE_URL": fakes.base_url, "GOOGLE_API_KEY": KEY,
        "TOKMODEL_IMAGE_FETCH_MAX_BYTES": "1000", "TOKMODEL_IMAGE_FETCH_ALLOW_PRIVATE": "1"})


def test_text_with_system_is_translated_and_charged_exactly(gw, up, acct):
    account, client = acct
    reply = client.chat.completions.create(model=MODEL, messages=[
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "hello there"},
        {"role": "assistant", "content": "hi"},
        {"role": "user", "content": "hello there gateway"}],
        temperature=0.2, top_p=0.9, max_tokens=100, max_completion_tokens=50, seed=3,
        stop=["END"], presence_penalty=0.1)
    sent = up.last
    assert sent.path == "/v1beta/models/gemini-2.0-flash:generateContent"
    assert sent.headers["x-goog-api-key"] == KEY
    assert sent.body["systemInstruction"] == {"parts": [{"text": "Be brief."}]}
    assert sent.body["contents"] == [
        {"role": "user", "parts": [{"text": "hello there"}]},
        {"role": "model", "parts": [{"text": "hi"}]},
        {"role": "user", "parts": [{"text": "hello there gateway"}]}]
    assert sent.body["generationConfig"] == {
        "temperature": 0.2, "topP": 0.9, "maxOutputTokens": 50, "seed": 3,
        "stopSequences": ["END"], "presencePenalty": 0.1}
    assert reply.choices[0].message.content == "echo: hello there gateway"
    assert reply.choices[0].finish_reason == "stop"
    assert reply.model == MODEL
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (8, 4)
    cost = chat_cost_nano(MODEL, 8, 4)
    assert charged(gw, account) == cost
    assert reply.usage.model_extra["cost"] == credits(cost)


def test_cached_and_thinking_tokens_are_counted(gw, up, acct):
    account, client = acct
    up.cached_tokens = 400
    reply = client.chat.completions.create(model=MODEL, reasoning_effort="medium",
                                           messages=[{"role": "user", "content": "ponder"}])
    config = up.last.body["generationConfig"]
    assert config["thinkingConfig"] == {"thinkingBudget": 8192, "includeThoughts": True}
    usage = reply.usage
    assert usage.prompt_tokens == 1 + 400
    assert usage.prompt_tokens_details.cached_tokens == 400
    # "Thinking about ponder" (3 thought words) + "echo: ponder" (2 words)
    assert usage.completion_tokens == 5
    assert usage.completion_tokens_details.reasoning_tokens == 3
    assert reply.choices[0].message.model_extra["reasoning_content"] == "Thinking about ponder"
    assert charged(gw, account) == chat_cost_nano(MODEL, 401, 5, cached=400)


def test_stream_crlf_events_become_chunks_with_usage_and_cost(gw, up, acct):
    account, client = acct
    chunks = list(client.chat.completions.create(
        model=MODEL, stream=True, stream_options={"include_usage": True},
        messages=[{"role": "user", "content": "stream these five words"}]))
    sent = up.last
    assert sent.path.endswith(":streamGenerateContent") and sent.query == "alt=sse"
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks
                   if c.choices) == "echo: stream these five words"
    assert [c.choices[0].finish_reason for c in chunks if c.choices
            and c.choices[0].finish_reason] == ["stop"]
    usage = chunks[-1].usage
    assert (usage.prompt_tokens, usage.completion_tokens) == (4, 5)
    cost = chat_cost_nano(MODEL, 4, 5)
    assert usage.model_extra["cost"] == credits(cost)
    assert charged(gw, account) == cost


def test_tool_round_trip_with_generated_ids_and_signatures(gw, up, acct):
    account, client = acct
    up.signatures = True
    first = client.chat.completions.create(
        model=MODEL, tools=[WEATHER_TOOL],
        messages=[{"role": "user", "content": "What is the weather in Oslo?"}])
    declaration = up.last.body["tools"][0]["functionDeclarations"][0]
    assert declaration == {"name": "get_weather", "description": "Current weather in a city",
                           "parameters": {"type": "OBJECT",
                                          "properties": {"city": {"type": "STRING"}},
                                          "required": ["city"]}}
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"      # Gemini said STOP
    call = choice.message.tool_calls[0]
    assert call.id and json.loads(call.function.arguments) == {"city": "Oslo"}
    signature = call.model_extra["extra_content"]["google"]["thought_signature"]

    final = client.chat.completions.create(model=MODEL, tools=[WEATHER_TOOL], messages=[
        {"role": "user", "content": "What is the weather in Oslo?"},
        choice.message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": '{"temp_c": 4}'}])
    contents = up.last.body["contents"]
    assert contents[1] == {"role": "model", "parts": [
        {"functionCall": {"name": "get_weather", "args": {"city": "Oslo"}},
         "thoughtSignature": signature}]}
    assert contents[2] == {"role": "user", "parts": [
        {"functionResponse": {"name": "get_weather", "response": {"temp_c": 4}}}]}
    assert final.choices[0].message.content == 'echo: {"temp_c": 4}'
    assert charged(gw, account) == (
        chat_cost_nano(MODEL, first.usage.prompt_tokens, first.usage.completion_tokens)
        + chat_cost_nano(MODEL, final.usage.prompt_tokens, final.usage.completion_tokens))


def test_tool_round_trip_streamed(gw, up, acct):
    _, client = acct
    chunks = list(client.chat.completions.create(
        model=MODEL, stream=True, tools=[WEATHER_TOOL],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        messages=[{"role": "user", "content": "Oslo please"}]))
    assert up.last.body["toolConfig"] == {"functionCallingConfig": {
        "mode": "ANY", "allowedFunctionNames": ["get_weather"]}}
    deltas = [c.choices[0].delta.tool_calls[0] for c in chunks
              if c.choices and c.choices[0].delta.tool_calls]
    assert len(deltas) == 1 and deltas[0].index == 0 and deltas[0].id
    assert deltas[0].function.name == "get_weather"
    assert json.loads(deltas[0].function.arguments) == {"city": "Oslo"}
    assert [c.choices[0].finish_reason for c in chunks if c.choices
            and c.choices[0].finish_reason] == ["tool_calls"]
    final = list(client.chat.completions.create(model=MODEL, stream=True, messages=[
        {"role": "user", "content": "Oslo please"},
        {"role": "assistant", "tool_calls": [{"id": deltas[0].id, "type": "function",
                                              "function": {"name": "get_weather",
                                                           "arguments": '{"city":"Oslo"}'}}]},
        {"role": "tool", "tool_call_id": deltas[0].id, "content": "4 degrees"}],
        tools=[WEATHER_TOOL]))
    assert up.last.body["contents"][2]["parts"] == [
        {"functionResponse": {"name": "get_weather", "response": {"result": "4 degrees"}}}]
    assert "".join(c.choices[0].delta.content or "" for c in final
                   if c.choices) == 'echo: {"result": "4 degrees"}'


def test_images_inline_and_fetched(gw, up, acct, image_host):
    _, client = acct
    reply = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": [
        {"type": "text", "text": "Compare"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
        {"type": "image_url", "image_url": {"url": f"{image_host}/cat.png"}}]}])
    parts = up.last.body["contents"][0]["parts"]
    assert parts[1] == {"inlineData": {"mimeType": "image/png", "data": PNG}}
    assert parts[2] == {"inlineData": {"mimeType": "image/png", "data": PNG}}
    assert reply.choices[0].message.content == (
        "echo: Compare [image image/png 48 bytes] [image image/png 48 bytes]")


@pytest.mark.parametrize("path, words", [("/big.png", "larger than 1000 bytes"),
                                         ("/page.html", "did not return an image"),
                                         ("/missing.png", "HTTP 404")])
def test_bad_image_urls_are_a_400(gw, up, acct, image_host, path, words):
    account, client = acct
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": image_host + path}}]}])
    assert words in info.value.body["message"]
    assert info.value.body["param"] == "messages[0].content[0].image_url.url"
    assert up.requests == [] and charged(gw, account) == 0


def test_json_schema_output(gw, up, acct):
    _, client = acct
    schema = {"type": "object", "properties": {"echo": {"type": "string"}},
              "required": ["echo"], "additionalProperties": False}
    reply = client.chat.completions.create(model=MODEL, messages=[
        {"role": "user", "content": "give json"}],
        response_format={"type": "json_schema", "json_schema": {"name": "e", "schema": schema}})
    config = up.last.body["generationConfig"]
    assert config["responseMimeType"] == "application/json"
    assert config["responseSchema"] == {"type": "OBJECT", "required": ["echo"],
                                        "properties": {"echo": {"type": "STRING"}}}
    assert json.loads(reply.choices[0].message.content) == {"echo": "echo: give json"}


def test_n_is_candidate_count(gw, up, acct):
    account, client = acct
    reply = client.chat.completions.create(model=MODEL, n=2,
                                           messages=[{"role": "user", "content": "twice"}])
    assert up.last.body["generationConfig"]["candidateCount"] == 2
    assert [c.index for c in reply.choices] == [0, 1]
    assert all(c.message.content == "echo: twice" for c in reply.choices)
    assert reply.usage.completion_tokens == 4
    assert charged(gw, account) == chat_cost_nano(MODEL, 1, 4)


def test_bad_gateway_key_is_a_502_for_the_operator(gw, up, acct):
    account, client = acct
    up.api_key = "rotated"
    try:
        with pytest.raises(openai.APIStatusError) as info:
            client.chat.completions.create(model=MODEL,
                                           messages=[{"role": "user", "content": "x"}])
    finally:
        up.api_key = KEY
    assert info.value.status_code == 502
    assert "GOOGLE_API_KEY" in info.value.body["message"]
    assert charged(gw, account) == 0


def test_resource_exhausted_is_a_429_with_retry_after(gw, up, acct):
    _, client = acct
    up.fail_next(429, {"error": {"code": 429, "message": "Quota exceeded.",
                                 "status": "RESOURCE_EXHAUSTED", "details": [
        {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "37s"}]}})
    with pytest.raises(openai.RateLimitError) as info:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}])
    assert info.value.body["message"] == "Quota exceeded."
    assert info.value.response.headers["retry-after"] == "37"


def test_invalid_argument_keeps_the_upstream_message(gw, up, acct):
    _, client = acct
    up.fail_next(400, {"error": {"code": 400, "message": "Bad schema.",
                                 "status": "INVALID_ARGUMENT"}})
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}])
    assert info.value.body["message"] == "Bad schema."


def test_mid_stream_error_event_charges_what_was_produced(gw, up, acct):
    account, client = acct
    up.error_in_stream_after(1)
    got = []
    with pytest.raises(openai.APIError) as info:
        for chunk in client.chat.completions.create(
                model=MODEL, stream=True,
                messages=[{"role": "user", "content": "one two three four five six"}]):
            got.append(chunk)
    assert "overloaded" in str(info.value)
    assert "".join(c.choices[0].delta.content or "" for c in got if c.choices) == "echo: one "
    # the running usage had only the prompt; output estimated from the text (ceil(10/4) = 3)
    assert charged(gw, account) == chat_cost_nano(MODEL, 6, 3)


@pytest.mark.parametrize("kwargs, param", [
    ({"logit_bias": {"1": 5}}, "logit_bias"), ({"n": 9}, "n"),
    ({"top_logprobs": 2}, "top_logprobs"),
    ({"logprobs": True}, "logprobs")])
def test_unsupported_parameters_are_a_400_naming_the_field(gw, up, acct, kwargs, param):
    account, client = acct
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model=MODEL, messages=[
            {"role": "user", "content": "hi"}], **kwargs)
    assert info.value.body["param"] == param
    assert up.requests == [] and charged(gw, account) == 0
