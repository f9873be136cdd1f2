"""OpenAI-compatible chat end to end: the official openai SDK -> the gateway under gunicorn
(2 gevent workers) -> strict fake upstream servers. Checks what reached the upstream, what
the client got, and what the account was charged."""

from __future__ import annotations

import json
import threading

import openai
import pytest
import requests

from tests.fakes import FakeOpenAI
from tests.harness import free_port, openai_client, usage_rows
from tests.pricing_oracle import chat_cost_nano, credits

pytestmark = pytest.mark.integration

MISTRAL_FIELDS = {"model", "messages", "temperature", "top_p", "max_tokens", "stream", "stop",
                  "random_seed", "response_format", "tools", "tool_choice", "presence_penalty",
                  "frequency_penalty", "n", "parallel_tool_calls", "prediction", "safe_prompt"}


@pytest.fixture(scope="module")
def fakes(start_fakes):
    return start_fakes(
        openai=FakeOpenAI(api_key="sk-openai-upstream"),
        mistral=FakeOpenAI(api_key="mistral-up", models=["mistral-large-latest"],
                           known_fields=MISTRAL_FIELDS, extra_forbidden=True,
                           usage_in_last_chunk=True),
        groq=FakeOpenAI(api_key="groq-up", models=["llama-3.3-70b-versatile"]),
        together=FakeOpenAI(api_key="together-up",
                            models=["meta-llama/Llama-3.3-70B-Instruct-Turbo"]))


@pytest.fixture(scope="module")
def gw(fakes, gateway_factory):
    env = {"OPENAI_BASE_URL": fakes["openai"].base_url, "OPENAI_API_KEY": "sk-openai-upstream",
           "MISTRAL_BASE_URL": fakes["mistral"].base_url, "MISTRAL_API_KEY": "mistral-up",
           "GROQ_BASE_URL": fakes["groq"].base_url, "GROQ_API_KEY": "groq-up",
           "TOGETHER_BASE_URL": fakes["together"].base_url, "TOGETHER_API_KEY": "together-up",
           # a closed port: the provider is configured but unreachable
           "DEEPSEEK_BASE_URL": f"http://127.0.0.1:{free_port()}/v1", "DEEPSEEK_API_KEY": "x",
           "TOKMODEL_FIRST_BYTE_TIMEOUT": "1.5", "TOKMODEL_IDLE_TIMEOUT": "1.5",
           "TOKMODEL_MAX_BODY_BYTES": "200000"}
    return gateway_factory("gw", env, workers=2)


def test_chat_non_stream_charges_usage_times_price(gw, up):
    account, secret = gw.account(5_000_000_000)
    before = gw.balance(account)
    reply = openai_client(gw, secret).chat.completions.create(
        model="openai/gpt-4o", messages=[{"role": "user", "content": "hello there gateway"}])
    assert reply.choices[0].message.content == "echo: hello there gateway"
    assert reply.model == "openai/gpt-4o"
    received = up["openai"].last
    assert received.body["model"] == "gpt-4o"
    assert received.headers["Authorization"] == "Bearer sk-openai-upstream"
    expected = chat_cost_nano("openai/gpt-4o", reply.usage.prompt_tokens,
                               reply.usage.completion_tokens)
    assert expected > 0
    assert before - gw.balance(account) == expected
    assert reply.usage.model_extra["cost"] == pytest.approx(credits(expected))
    rows = usage_rows(gw, account)
    assert len(rows) == 1 and rows[0].cost_nano == expected and rows[0].status == 200
    assert rows[0].prompt_tokens == reply.usage.prompt_tokens


def test_every_openai_field_reaches_upstream_unchanged(gw, up):
    _, secret = gw.account()
    body = {"model": "openai/gpt-4o-mini",
            "messages": [{"role": "developer", "content": "be brief, answer in json"},
                         {"role": "user", "content": [
                             {"type": "text", "text": "look"},
                             {"type": "image_url",
                              "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=",
                                            "detail": "low"}}]}],
            "temperature": 0.3, "top_p": 0.9, "n": 2, "seed": 42, "logprobs": True,
            "top_logprobs": 2, "logit_bias": {"50256": -100}, "max_tokens": 50,
            "response_format": {"type": "json_object"}, "user": "u-1",
            "metadata": {"app": "x"}, "presence_penalty": 0.1, "frequency_penalty": 0.2,
            "stop": ["\n\n"], "service_tier": "default", "parallel_tool_calls": False,
            "tools": [{"type": "function", "function": {
                "name": "get_weather", "parameters": {"type": "object", "properties": {}}}}],
            "tool_choice": "none"}
    resp = requests.post(f"{gw.base_url}/chat/completions", json=body,
                         headers={"Authorization": f"Bearer {secret}"}, timeout=10)
    assert resp.status_code == 200, resp.text
    assert len(resp.json()["choices"]) == 2
    sent = up["openai"].last.body
    assert sent == {**body, "model": "gpt-4o-mini"}


def test_stream_with_usage_carries_cost_and_charges_it(gw, up):
    account, secret = gw.account()
    before = gw.balance(account)
    stream = openai_client(gw, secret).chat.completions.create(
        model="openai/gpt-4o", messages=[{"role": "user", "content": "one two three four"}],
        stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "echo: one two three four"
    assert chunks[0].choices[0].delta.role == "assistant"
    assert all(c.model == "openai/gpt-4o" for c in chunks)
    finals = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert [c.choices[0].finish_reason for c in finals] == ["stop"]
    usage = chunks[-1].usage
    assert chunks[-1].choices == [] and usage is not None
    expected = chat_cost_nano("openai/gpt-4o", usage.prompt_tokens, usage.completion_tokens)
    assert usage.model_extra["cost"] == pytest.approx(credits(expected))
    assert before - gw.balance(account) == expected


def test_stream_without_usage_hides_it_but_still_charges(gw, up):
    account, secret = gw.account()
    before = gw.balance(account)
    resp = requests.post(f"{gw.base_url}/chat/completions", stream=True, timeout=10,
                         headers={"Authorization": f"Bearer {secret}"},
                         json={"model": "openai/gpt-4o", "stream": True,
                               "messages": [{"role": "user", "content": "a b c"}]})
    assert resp.headers["Content-Type"].startswith("text/event-stream")
    events = [line[6:] for line in resp.iter_lines(decode_unicode=True)
              if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert all(c.get("usage") is None for c in chunks)
    assert up["openai"].last.body["stream_options"] == {"include_usage": True}
    # prompt "a b c" = 3 words, reply "echo: a b c" = 4 words
    assert before - gw.balance(account) == chat_cost_nano("openai/gpt-4o", 3, 4)


def test_stream_is_forwarded_chunk_by_chunk(gw, up):
    _, secret = gw.account()
    up["openai"].chunk_delay = 0.3
    try:
        resp = requests.post(f"{gw.base_url}/chat/completions", stream=True, timeout=10,
                             headers={"Authorization": f"Bearer {secret}"},
                             json={"model": "openai/gpt-4o", "stream": True,
                                   "messages": [{"role": "user",
                                                 "content": "w1 w2 w3 w4 w5 w6"}]})
        lines = resp.iter_lines(decode_unicode=True)
        first = next(line for line in lines if line.startswith("data: "))
        # the upstream needs ~3 s for the whole stream; the first chunk must not wait for it
        assert json.loads(first[6:])["choices"][0]["delta"]["role"] == "assistant"
        assert up["openai"].requests and not any(
            "[DONE]" in line for line in [first])
        rest = [line for line in lines if line.startswith("data: ")]
        assert rest[-1] == "data: [DONE]"
    finally:
        up["openai"].chunk_delay = 0.0


@pytest.mark.parametrize("stream", [False, True])
def test_tool_round_trip(gw, up, stream):
    _, secret = gw.account()
    c = openai_client(gw, secret)
    tools = [{"type": "function", "function": {
        "name": "get_weather", "description": "weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]
    messages = [{"role": "user", "content": "what is the weather in Oslo"}]
    if stream:
        chunks = list(c.chat.completions.create(model="openai/gpt-4o", messages=messages,
                                                tools=tools, stream=True))
        deltas = [tc for ch in chunks if ch.choices for tc in (ch.choices[0].delta.tool_calls
                                                                 or [])]
        call_id, name = deltas[0].id, deltas[0].function.name
        arguments = "".join(d.function.arguments or "" for d in deltas)
        finish = [ch.choices[0].finish_reason for ch in chunks
                  if ch.choices and ch.choices[0].finish_reason]
        assert finish == ["tool_calls"]
    else:
        reply = c.chat.completions.create(model="openai/gpt-4o", messages=messages,
                                          tools=tools)
        assert reply.choices[0].finish_reason == "tool_calls"
        call = reply.choices[0].message.tool_calls[0]
        call_id, name, arguments = call.id, call.function.name, call.function.arguments
    assert name == "get_weather" and json.loads(arguments) == {"city": "Oslo"}
    messages += [{"role": "assistant", "content": None, "tool_calls": [
        {"id": call_id, "type": "function",
         "function": {"name": name, "arguments": arguments}}]},
        {"role": "tool", "tool_call_id": call_id, "content": "4 degrees"}]
    final = c.chat.completions.create(model="openai/gpt-4o", messages=messages, tools=tools)
    assert final.choices[0].message.content == "echo: 4 degrees"
    assert up["openai"].last.body["messages"][-1]["tool_call_id"] == call_id


def test_descriptor_mapping_for_mistral(gw, up):
    _, secret = gw.account()
    reply = openai_client(gw, secret).chat.completions.create(
        model="mistral/mistral-large-latest", seed=3, max_completion_tokens=100,
        messages=[{"role": "user", "content": "hi", "name": "bob"}], user="u1",
        tools=[{"type": "function", "function": {"name": "f", "parameters": {}}}])
    assert reply.model == "mistral/mistral-large-latest"
    sent = up["mistral"].last.body
    assert sent["random_seed"] == 3 and "seed" not in sent
    assert sent["max_tokens"] == 100 and "max_completion_tokens" not in sent
    assert "user" not in sent and "name" not in sent["messages"][0]


MISTRAL = "mistral/mistral-large-latest"
# 6 words (27 characters) in, "echo: ..." 7 words (33 characters) out: the fake's usage
# differs from the gateway's 4-characters-a-token estimate (7 and 9), so the charge tells
# which one was used.
MISTRAL_PROMPT = "one two three four five six"


def test_mistral_fake_refuses_stream_options_like_mistral(up):
    resp = requests.post(f"{up['mistral'].base_url}/chat/completions", timeout=10,
                         headers={"Authorization": "Bearer mistral-up"},
                         json={"model": "mistral-large-latest", "stream": True,
                               "stream_options": {"include_usage": True},
                               "messages": [{"role": "user", "content": "hi"}]})
    assert resp.status_code == 422
    assert resp.json()["message"]["detail"][0]["type"] == "extra_forbidden"


@pytest.mark.parametrize("include_usage", [False, True])
def test_mistral_stream_takes_usage_from_its_last_chunk(gw, up, include_usage):
    account, secret = gw.account()
    before = gw.balance(account)
    extra = {"stream_options": {"include_usage": True}} if include_usage else {}
    stream = openai_client(gw, secret).chat.completions.create(
        model=MISTRAL, messages=[{"role": "user", "content": MISTRAL_PROMPT}], stream=True,
        **extra)
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "echo: " + MISTRAL_PROMPT
    assert "stream_options" not in up["mistral"].last.body
    expected = chat_cost_nano(MISTRAL, 6, 7)
    assert before - gw.balance(account) == expected
    with_usage = [c for c in chunks if c.usage is not None]
    if include_usage:
        # one usage chunk, last, without choices, as OpenAI sends it
        assert with_usage == [chunks[-1]] and chunks[-1].choices == []
        usage = chunks[-1].usage
        assert (usage.prompt_tokens, usage.completion_tokens) == (6, 7)
        assert usage.model_extra["cost"] == pytest.approx(credits(expected))
        assert chunks[-2].choices[0].finish_reason == "stop"
    else:
        assert with_usage == []
        assert chunks[-1].choices[0].finish_reason == "stop"


def test_descriptor_reject_is_a_400_naming_the_field_and_free(gw, up):
    account, secret = gw.account()
    before = gw.balance(account)
    with pytest.raises(openai.BadRequestError) as err:
        openai_client(gw, secret).chat.completions.create(
            model="mistral/mistral-large-latest", logit_bias={"1": 5},
            messages=[{"role": "user", "content": "hi"}])
    assert err.value.body["param"] == "logit_bias"
    assert "mistral" in err.value.body["message"]
    assert up["mistral"].requests == []
    assert gw.balance(account) == before
    with pytest.raises(openai.BadRequestError) as err:
        openai_client(gw, secret).chat.completions.create(
            model="groq/llama-3.3-70b-versatile", n=2,
            messages=[{"role": "user", "content": "hi"}])
    assert err.value.body["param"] == "n"


def test_meta_llama_is_served_through_its_host(gw, up):
    _, secret = gw.account()
    reply = openai_client(gw, secret).chat.completions.create(
        model="meta-llama/llama-3.3-70b-instruct", messages=[{"role": "user", "content": "x"}])
    assert reply.model == "meta-llama/llama-3.3-70b-instruct"
    assert up["together"].last.body["model"] == "meta-llama/Llama-3.3-70B-Instruct-Turbo"


def test_models_list_shows_usable_models_with_pricing(gw):
    _, secret = gw.account()
    c = openai_client(gw, secret)
    models = {m.id: m for m in c.models.list()}
    assert {"openai/gpt-4o", "mistral/mistral-large-latest",
            "meta-llama/llama-3.3-70b-instruct"} <= set(models)
    assert "anthropic/claude-sonnet-4-5" not in models  # no ANTHROPIC_API_KEY
    gpt = models["openai/gpt-4o"]
    assert gpt.owned_by == "openai" and gpt.object == "model" and gpt.created > 0
    assert gpt.model_extra["pricing"]["input_per_mtok"] == 2.5
    assert c.models.retrieve("openai/gpt-4o").id == "openai/gpt-4o"
    beta = requests.get(f"{gw.url}/v1beta/models", headers={"Authorization": f"Bearer {secret}"},
                        timeout=5).json()
    assert beta["object"] == "list" and {m["id"] for m in beta["data"]} == set(models)
    with pytest.raises(openai.NotFoundError):
        c.models.retrieve("nope/nothing")


def test_authentication_and_revocation_in_every_worker(gw, up):
    account, secret = gw.account()
    c = openai_client(gw, secret)
    for _ in range(4):  # both workers accept it
        c.chat.completions.create(model="openai/gpt-4o", messages=[{"role": "user",
                                                                    "content": "x"}])
    key_id = gw.store.list_keys(gw.store.get_account_by_id(account).name)[0].id
    assert gw.store.revoke_key(key_id)
    for _ in range(4):  # the very next request, whichever worker takes it
        with pytest.raises(openai.AuthenticationError) as err:
            c.chat.completions.create(model="openai/gpt-4o",
                                      messages=[{"role": "user", "content": "x"}])
        assert err.value.body == {"message": "Invalid or missing API key.",
                                  "type": "authentication_error", "param": None, "code": 401}
    resp = requests.post(f"{gw.base_url}/chat/completions", json={}, timeout=5)
    assert resp.status_code == 401


def test_insufficient_credits_is_403_and_nothing_is_sent(gw, up):
    account, secret = gw.account(credits_nano=10_000)
    with pytest.raises(openai.PermissionDeniedError) as err:
        openai_client(gw, secret).chat.completions.create(
            model="openai/gpt-4o", messages=[{"role": "user", "content": "hello"}])
    assert err.value.body["type"] == "authorization_error"
    assert err.value.body["message"].startswith("Insufficient credits")
    assert up["openai"].requests == []
    assert gw.balance(account) == 10_000


@pytest.mark.parametrize("body,param", [
    ({"model": "openai/gpt-4o", "messages": []}, "messages"),
    ({"model": "openai/gpt-4o", "messages": [{"role": "user", "content": "x"}],
      "temperature": "hot"}, "temperature"),
    ({"model": "openai/gpt-4o", "messages": [{"role": "tool", "content": "x"}]},
     "messages[0].tool_call_id"),
    ({"messages": [{"role": "user", "content": "x"}]}, "model"),
])
def test_schema_violations_name_the_field(gw, up, body, param):
    account, secret = gw.account()
    before = gw.balance(account)
    resp = requests.post(f"{gw.base_url}/chat/completions", json=body, timeout=5,
                         headers={"Authorization": f"Bearer {secret}"})
    assert resp.status_code == 400
    error = resp.json()["error"]
    assert error["param"] == param and param in error["message"]
    assert error["type"] == "invalid_request_error"
    assert gw.balance(account) == before and up["openai"].requests == []


def test_malformed_and_oversized_bodies(gw, up):
    _, secret = gw.account()
    auth = {"Authorization": f"Bearer {secret}", "Content-Type": "application/json"}
    bad = requests.post(f"{gw.base_url}/chat/completions", data=b'{"model": ', headers=auth,
                        timeout=5)
    assert bad.status_code == 400 and "not valid JSON" in bad.json()["error"]["message"]
    big = {"model": "openai/gpt-4o", "messages": [{"role": "user", "content": "x" * 300_000}]}
    resp = requests.post(f"{gw.base_url}/chat/completions", json=big, headers=auth, timeout=5)
    assert resp.status_code == 413 and "limit" in resp.json()["error"]["message"]
    assert up["openai"].requests == []


def pieces(data: bytes, size: int = 1000):
    """A generator body: `requests` sends it with Transfer-Encoding: chunked, no length."""
    for at in range(0, len(data), size):
        yield data[at:at + size]


def test_chunked_json_body_is_read_whole_and_charged(gw, up):
    account, secret = gw.account()
    before = gw.balance(account)
    words = " ".join(["word"] * 3000)  # ~15 kB: many HTTP chunks
    body = json.dumps({"model": "openai/gpt-4o",
                       "messages": [{"role": "user", "content": words}]}).encode()
    resp = requests.post(f"{gw.base_url}/chat/completions", data=pieces(body), timeout=10,
                         headers={"Authorization": f"Bearer {secret}",
                                  "Content-Type": "application/json"})
    assert resp.request.headers["Transfer-Encoding"] == "chunked"
    assert "Content-Length" not in resp.request.headers
    assert resp.status_code == 200, resp.text
    assert resp.json()["choices"][0]["message"]["content"] == "echo: " + words
    assert up["openai"].last.body["messages"][0]["content"] == words
    assert before - gw.balance(account) == chat_cost_nano("openai/gpt-4o", 3000, 3001)


def test_chunked_json_body_over_the_limit_is_413_and_free(gw, up):
    account, secret = gw.account()
    before = gw.balance(account)
    big = json.dumps({"model": "openai/gpt-4o",
                      "messages": [{"role": "user", "content": "x" * 210_000}]}).encode()
    resp = requests.post(f"{gw.base_url}/chat/completions", data=pieces(big, 16_384),
                         timeout=10, headers={"Authorization": f"Bearer {secret}",
                                              "Content-Type": "application/json"})
    assert resp.status_code == 413
    assert resp.json()["error"]["message"] == (
        "Request body exceeds the limit of 200000 bytes.")
    assert up["openai"].requests == []
    assert gw.balance(account) == before


def test_unknown_model_and_path(gw, up):
    _, secret = gw.account()
    with pytest.raises(openai.NotFoundError) as err:
        openai_client(gw, secret).chat.completions.create(
            model="openai/gpt-99", messages=[{"role": "user", "content": "x"}])
    assert "/v1/models" in err.value.body["message"]
    resp = requests.get(f"{gw.url}/v1/nothing", timeout=5,
                        headers={"Authorization": f"Bearer {secret}"})
    assert resp.status_code == 404 and resp.json()["error"]["code"] == 404
    resp = requests.delete(f"{gw.base_url}/chat/completions", timeout=5)
    assert resp.status_code == 405
    with pytest.raises(openai.BadRequestError) as err:
        openai_client(gw, secret).chat.completions.create(
            model="openai/text-embedding-3-small", messages=[{"role": "user", "content": "x"}])
    assert "embeddings" in err.value.body["message"]


def test_upstream_429_keeps_status_and_retry_after_and_is_free(gw, up):
    account, secret = gw.account()
    before = gw.balance(account)
    up["openai"].fail_next(429, headers={"Retry-After": "60"})
    with pytest.raises(openai.RateLimitError) as err:
        openai_client(gw, secret).chat.completions.create(
            model="openai/gpt-4o", messages=[{"role": "user", "content": "x"}])
    assert err.value.response.headers["retry-after"] == "60"
    assert gw.balance(account) == before
    assert [r.status for r in usage_rows(gw, account)] == [429]


def test_upstream_same_dialect_error_keeps_body(gw, up):
    _, secret = gw.account()
    body = {"error": {"message": "context too long", "type": "invalid_request_error",
                      "param": "messages", "code": "context_length_exceeded"}}
    up["openai"].fail_next(400, body=body)
    with pytest.raises(openai.BadRequestError) as err:
        openai_client(gw, secret).chat.completions.create(
            model="openai/gpt-4o", messages=[{"role": "user", "content": "x"}])
    assert err.value.body == body["error"]


def test_upstream_credential_failure_is_502_without_secrets(gw, up):
    _, secret = gw.account()
    up["openai"].fail_next(401, body={"error": {
        "message": "Incorrect API key provided: sk-openai-upstream", "type": "x"}})
    with pytest.raises(openai.InternalServerError) as err:
        openai_client(gw, secret).chat.completions.create(
            model="openai/gpt-4o", messages=[{"role": "user", "content": "x"}])
    assert err.value.status_code == 502
    text = err.value.response.text
    assert "OPENAI_API_KEY" in text and "sk-openai-upstream" not in text
    assert "sk-openai-upstream" not in gw.log() and secret not in gw.log()


def test_unreachable_timeout_and_invalid_upstream(gw, up):
    account, secret = gw.account()
    before = gw.balance(account)
    c = openai_client(gw, secret)
    with pytest.raises(openai.InternalServerError) as err:
        c.chat.completions.create(model="deepseek/deepseek-chat",
                                  messages=[{"role": "user", "content": "x"}])
    assert err.value.status_code == 502
    for _ in range(3):  # every attempt times out before its first byte
        up["openai"].hang_next(3)
    with pytest.raises(openai.APIStatusError) as err:
        c.chat.completions.create(model="openai/gpt-4o",
                                  messages=[{"role": "user", "content": "x"}])
    assert err.value.status_code == 504
    up["openai"].invalid_json_next()
    with pytest.raises(openai.InternalServerError) as err:
        c.chat.completions.create(model="openai/gpt-4o",
                                  messages=[{"role": "user", "content": "x"}])
    assert err.value.status_code == 502
    assert gw.balance(account) == before


def test_error_mid_stream_is_an_error_event_charged_for_what_was_produced(gw, up):
    account, secret = gw.account()
    before = gw.balance(account)
    up["openai"].error_in_stream_after(2, message="upstream exploded")
    stream = openai_client(gw, secret).chat.completions.create(
        model="openai/gpt-4o", stream=True,
        messages=[{"role": "user", "content": "alpha beta gamma delta epsilon"}])
    received = []
    with pytest.raises(openai.APIError, match="upstream exploded"):
        for chunk in stream:
            received.append(chunk.choices[0].delta.content or "")
    assert "".join(received).strip() == "echo: alpha"
    charged = before - gw.balance(account)
    # estimated over the whole request: "role", "user", "content" and the 30-character text
    # -> 45 chars -> 12 tokens; produced "echo: alpha " 12 chars -> 3 tokens
    assert charged == chat_cost_nano("openai/gpt-4o", 12, 3)


def test_cut_upstream_stream_is_charged_estimate_and_ends_with_error(gw, up):
    account, secret = gw.account()
    before = gw.balance(account)
    up["openai"].cut_stream_after(1)
    stream = openai_client(gw, secret).chat.completions.create(
        model="openai/gpt-4o", stream=True,
        messages=[{"role": "user", "content": "alpha beta gamma"}])
    with pytest.raises(openai.APIError):
        list(stream)
    charged = before - gw.balance(account)
    assert 0 < charged < chat_cost_nano("openai/gpt-4o", 100, 100)
    assert usage_rows(gw, account)[0].status == 502


def test_client_disconnect_settles_once(gw, up):
    account, secret = gw.account()
    before = gw.balance(account)
    up["openai"].chunk_delay = 0.2
    try:
        resp = requests.post(f"{gw.base_url}/chat/completions", stream=True, timeout=10,
                             headers={"Authorization": f"Bearer {secret}"},
                             json={"model": "openai/gpt-4o", "stream": True, "messages": [
                                 {"role": "user", "content": " ".join(["w"] * 40)}]})
        lines = resp.iter_lines()
        for _ in range(3):
            next(lines)
        resp.close()
        deadline = 50
        while deadline and not usage_rows(gw, account):
            threading.Event().wait(0.1)
            deadline -= 1
    finally:
        up["openai"].chunk_delay = 0.0
    rows = usage_rows(gw, account)
    assert len(rows) == 1 and rows[0].status == 499
    charged = before - gw.balance(account)
    assert charged == rows[0].cost_nano
    assert 0 < charged < chat_cost_nano("openai/gpt-4o", 40, 40)


def test_concurrent_requests_never_overdraw(gw, up):
    # each hold is about 16 * 150 + 1000 * 600 nano-credits; the balance covers three at a time
    account, secret = gw.account(credits_nano=2_000_000)
    results = []

    def call():
        resp = requests.post(f"{gw.base_url}/chat/completions", timeout=20,
                             headers={"Authorization": f"Bearer {secret}"},
                             json={"model": "openai/gpt-4o-mini", "max_tokens": 1000,
                                   "messages": [{"role": "user", "content": "hi"}]})
        results.append(resp.status_code)

    threads = [threading.Thread(target=call) for _ in range(24)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert set(results) <= {200, 403} and 200 in results
    rows = usage_rows(gw, account)
    assert gw.balance(account) == 2_000_000 - sum(r.cost_nano for r in rows) >= 0
    assert len([r for r in rows if r.status == 200]) == results.count(200)


def test_health_endpoints(gw):
    assert requests.get(f"{gw.url}/healthz", timeout=5).json() == {"status": "ok"}
    ready = requests.get(f"{gw.url}/readyz", timeout=5)
    assert ready.status_code == 200 and ready.json()["database"] is True
