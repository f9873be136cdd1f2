"""An upstream whose errors say too much, behind the real gateway (gunicorn): its error text
names the operator's organization, project, a masked key fragment, an account email and the
operator's configured key. None of it reaches a client, in any client format, whole or
streamed; the gateway's own 502 for a refused key still names the variable to check. And a
stream whose upstream stalls past the idle timeout is cut and recorded as 504."""

from __future__ import annotations

import json
import time

import pytest
import requests

from tests.fakes.hostile_upstream import LEAKED, HostileUpstream
from tests.harness import START_CREDITS as START
from tests.harness import usage_rows

OPENAI_KEY = "opkey-Zq81Lm0Pq7Rt5Vx2Yy"        # matches no key pattern: masked by value
ANTHROPIC_KEY = "antkey-Hd72Kw9Nb3Tg6Qs1Ff"
GPT = "openai/gpt-4o-mini"
CLAUDE = "anthropic/claude-haiku-4-5"


@pytest.fixture(scope="module")
def fakes(start_fakes):
    return start_fakes(HostileUpstream())


@pytest.fixture(scope="module")
def gw(gateway_factory, fakes):
    return gateway_factory("hostile", {
        "OPENAI_BASE_URL": fakes.base_url, "OPENAI_API_KEY": OPENAI_KEY,
        "ANTHROPIC_BASE_URL": fakes.origin, "ANTHROPIC_API_KEY": ANTHROPIC_KEY,
        "TOKMODEL_IDLE_TIMEOUT": "1", "TOKMODEL_RETRY_ATTEMPTS": "1"})


def _request(kind: str, model: str, stream: bool) -> tuple[str, dict]:
    if kind == "chat":
        return "/v1/chat/completions", {"model": model, "stream": stream,
                                        "messages": [{"role": "user", "content": "hi"}]}
    if kind == "messages":
        return "/v1/messages", {"model": model, "stream": stream, "max_tokens": 32,
                                "messages": [{"role": "user", "content": "hi"}]}
    return "/v1/responses", {"model": model, "stream": stream, "input": "hi"}


def _post(gw, secret: str, path: str, body: dict) -> requests.Response:
    return requests.post(gw.url + path, json=body, timeout=30,
                         headers={"Authorization": f"Bearer {secret}"})


def _assert_clean(text: str) -> None:
    for leaked in (*LEAKED, OPENAI_KEY, ANTHROPIC_KEY):
        assert leaked not in text, (leaked, text)
    assert "[redacted]" in text, text


FORMATS = [(kind, model) for kind in ("chat", "messages", "responses")
           for model in (GPT, CLAUDE)]


@pytest.mark.parametrize(("kind", "model"), FORMATS)
def test_whole_error_answers_are_masked(gw, up, kind, model):
    account, secret = gw.account(START)
    path, body = _request(kind, model, stream=False)
    resp = _post(gw, secret, path, body)
    assert resp.status_code == 400
    _assert_clean(resp.text)
    error = resp.json()["error"]
    assert "exceeded your current quota" in error["message"]   # the useful part is kept
    if kind == "messages":
        assert resp.json()["type"] == "error"
    assert [r.status for r in usage_rows(gw, account)] in ([], [400])
    assert gw.balance(account) == START


@pytest.mark.parametrize(("kind", "model"), FORMATS)
def test_errors_inside_streams_are_masked(gw, up, kind, model):
    up.mode = "stream_error"
    account, secret = gw.account()
    path, body = _request(kind, model, stream=True)
    resp = _post(gw, secret, path, body)
    assert resp.status_code == 200
    text = resp.text
    assert "Hello" in text and "exceeded your current quota" in text
    _assert_clean(text)


def test_a_failed_native_responses_stream_is_masked(gw, up):
    up.mode, up.failed = "stream_error", True
    _, secret = gw.account()
    path, body = _request("responses", GPT, stream=True)
    text = _post(gw, secret, path, body).text
    assert "response.failed" in text and "exceeded your current quota" in text
    _assert_clean(text)


def test_a_failed_native_response_answered_whole_is_masked(gw, up):
    up.mode, up.failed = "ok", True
    _, secret = gw.account()
    path, body = _request("responses", GPT, stream=False)
    resp = _post(gw, secret, path, body)
    assert resp.status_code == 200 and resp.json()["status"] == "failed"
    assert "exceeded your current quota" in resp.json()["error"]["message"]
    _assert_clean(resp.text)


def test_embeddings_errors_are_masked(gw, up):
    _, secret = gw.account()
    resp = _post(gw, secret, "/v1/embeddings",
                 {"model": "openai/text-embedding-3-small", "input": "hi"})
    assert resp.status_code == 400
    _assert_clean(resp.text)


@pytest.mark.parametrize("status", [401, 403])
def test_refused_credentials_are_a_502_naming_the_variable(gw, up, status):
    up.status = status
    _, secret = gw.account()
    for kind, model, variable in (("chat", GPT, "OPENAI_API_KEY"),
                                  ("messages", CLAUDE, "ANTHROPIC_API_KEY")):
        path, body = _request(kind, model, stream=False)
        resp = _post(gw, secret, path, body)
        assert resp.status_code == 502
        assert variable in resp.text
        for leaked in (*LEAKED, OPENAI_KEY, ANTHROPIC_KEY):
            assert leaked not in resp.text


def _wait_rows(gw, account: int) -> list:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        rows = usage_rows(gw, account)
        if rows:
            return rows
        time.sleep(0.05)
    return []


@pytest.mark.parametrize(("kind", "model"), [("chat", GPT), ("chat", CLAUDE),
                                             ("messages", CLAUDE), ("messages", GPT),
                                             ("responses", GPT), ("responses", CLAUDE)])
@pytest.mark.parametrize("mid_chunk", [False, True], ids=["between-chunks", "mid-chunk"])
def test_a_stalled_stream_is_cut_and_recorded_as_504(gw, up, kind, model, mid_chunk):
    up.mode, up.stall, up.stall_mid_chunk = "stall", 4.0, mid_chunk
    account, secret = gw.account()
    path, body = _request(kind, model, stream=True)
    started = time.monotonic()
    resp = _post(gw, secret, path, body)
    text = resp.text
    assert time.monotonic() - started < 3.5       # cut by the 1 s idle timeout
    assert "Hello" in text and "in time" in text
    (row,) = _wait_rows(gw, account)
    assert row.status == 504
    records = [json.loads(line) for line in gw.log().splitlines()
               if line.startswith("{") and '"request_id"' in line]
    mine = [r for r in records if r.get("account") == account]
    assert [r["status"] for r in mine] == [504]
