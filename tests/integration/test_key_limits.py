"""Per-key limits end to end: the official openai and anthropic SDKs -> the gateway under
gunicorn (2 workers) -> strict fake OpenAI and Anthropic APIs. A key's model allow-list (with
globs and aliases, fallbacks included, and what /v1/models shows it), its request and token
rates (429 with Retry-After and OpenAI's x-ratelimit-* headers, the token estimate corrected
at settle), its spend limit under 50 concurrent requests (SQLite, and PostgreSQL when
TOKMODEL_TEST_POSTGRES_URL is set), its expiry, and updates seen by the next request."""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import anthropic
import openai
import pytest
import requests
from sqlalchemy import text

from tests.fakes import FakeOpenAI
from tests.fakes.anthropic_upstream import FakeAnthropic
from tests.harness import START_CREDITS, anthropic_client, charged, openai_client, usage_rows

pytestmark = pytest.mark.integration

KEYS = {"openai": "sk-openai-up", "anthropic": "anthropic-up"}
MODEL = "openai/gpt-4o-mini"
HELLO = [{"role": "user", "content": "hello there gateway"}]
PG_ENV = "TOKMODEL_TEST_POSTGRES_URL"


@pytest.fixture(scope="module")
def fakes(start_fakes):
    return start_fakes(
        openai=FakeOpenAI(api_key=KEYS["openai"], models=["gpt-4o-mini", "gpt-4o"]),
        anthropic=FakeAnthropic(api_key=KEYS["anthropic"],
                                models=("claude-haiku-4-5", "claude-sonnet-4-5")))


def _env(fakes) -> dict[str, str]:
    return {"OPENAI_BASE_URL": fakes["openai"].base_url, "OPENAI_API_KEY": KEYS["openai"],
            "ANTHROPIC_BASE_URL": fakes["anthropic"].base_url,
            "ANTHROPIC_API_KEY": KEYS["anthropic"]}


@pytest.fixture(scope="module")
def gw(fakes, gateway_factory):
    return gateway_factory("gw-key-limits", _env(fakes), workers=2)


def limited_key(gw, credits: int = START_CREDITS, **limits) -> tuple[int, str, str]:
    """A new account and a key of it with these limits: (account id, key id, secret)."""
    account, _ = gw.account(credits)
    record, secret = gw.store.create_key(gw.created[-1], "limited", limits)
    return account, record.id, secret


def test_a_model_outside_the_allow_list_is_refused_before_anything_is_sent(gw, up):
    account, _, secret = limited_key(gw, models="openai/gpt-4o-mini,anthropic/claude-haiku-*")
    client = openai_client(gw, secret)
    # an alias of an allowed model is the allowed model
    reply = client.chat.completions.create(model="gpt-4o-mini-2024-07-18", messages=HELLO)
    assert reply.choices[0].message.content == "echo: hello there gateway"
    spent = charged(gw, account)
    sent = len(up["openai"].requests)
    with pytest.raises(openai.PermissionDeniedError) as err:
        client.chat.completions.create(model="gpt-4o", messages=HELLO)
    assert "'openai/gpt-4o'" in err.value.message and err.value.body["param"] == "model"
    # the client's own fallbacks are checked too
    with pytest.raises(openai.PermissionDeniedError) as err:
        client.chat.completions.create(model=MODEL, messages=HELLO,
                                       extra_body={"models": [MODEL, "openai/gpt-4o"]})
    assert "'openai/gpt-4o'" in err.value.message
    # in the client's format: Anthropic's permission_error on /v1/messages; a glob matches
    claude = anthropic_client(gw, secret)
    with pytest.raises(anthropic.PermissionDeniedError) as err:
        claude.messages.create(model="claude-sonnet-4-5", max_tokens=20, messages=HELLO)
    assert err.value.body["error"]["type"] == "permission_error"
    assert "anthropic/claude-sonnet-4-5" in err.value.body["error"]["message"]
    assert len(up["openai"].requests) == sent and not up["anthropic"].requests
    assert charged(gw, account) == spent and len(usage_rows(gw, account)) == 1
    allowed = claude.messages.create(model="claude-haiku-4-5", max_tokens=20, messages=HELLO)
    assert allowed.content[0].text


def test_models_lists_only_what_the_key_may_use(gw, up):
    _, _, secret = limited_key(gw, models="openai/gpt-4o*,anthropic/claude-haiku-4-5")
    _, open_secret = gw.account(START_CREDITS)
    everything = {m.id for m in openai_client(gw, open_secret).models.list()}
    seen = {m.id for m in openai_client(gw, secret).models.list()}
    assert "openai/gpt-4o-mini" in seen and "anthropic/claude-haiku-4-5" in seen
    assert seen == {m for m in everything if m.startswith("openai/gpt-4o")
                    or m == "anthropic/claude-haiku-4-5"}
    beta = requests.get(f"{gw.url}/v1beta/models", timeout=10,
                        headers={"Authorization": f"Bearer {secret}"}).json()
    assert {m["id"] for m in beta["data"]} == seen
    with pytest.raises(openai.NotFoundError):
        openai_client(gw, secret).models.retrieve("anthropic/claude-sonnet-4-5")
    assert openai_client(gw, secret).models.retrieve(
        "claude-haiku-4-5-20251001").id == "anthropic/claude-haiku-4-5"


def test_requests_per_minute_429_with_openai_headers_and_update_takes_effect(gw, up):
    account, key_id, secret = limited_key(gw, rpm=3)
    client = openai_client(gw, secret)
    remaining = []
    for _ in range(3):
        raw = client.chat.completions.with_raw_response.create(model=MODEL, messages=HELLO)
        assert raw.headers["x-ratelimit-limit-requests"] == "3"
        assert raw.headers["x-ratelimit-reset-requests"].endswith("s")
        remaining.append(int(raw.headers["x-ratelimit-remaining-requests"]))
    assert remaining == [2, 1, 0]
    spent, sent = charged(gw, account), len(up["openai"].requests)
    with pytest.raises(openai.RateLimitError) as err:
        client.chat.completions.create(model=MODEL, messages=HELLO)
    headers = err.value.response.headers
    assert int(headers["Retry-After"]) >= 1
    assert headers["x-ratelimit-limit-requests"] == "3"
    assert headers["x-ratelimit-remaining-requests"] == "0"
    assert "3 requests per minute" in err.value.message
    assert charged(gw, account) == spent and len(up["openai"].requests) == sent
    # raised: the next request (on either worker) sees it
    gw.store.update_key_limits(key_id, {"rpm": 10})
    raw = client.chat.completions.with_raw_response.create(model=MODEL, messages=HELLO)
    assert raw.headers["x-ratelimit-limit-requests"] == "10"
    # removed: no rate headers any more
    gw.store.update_key_limits(key_id, {"rpm": None})
    raw = client.chat.completions.with_raw_response.create(model=MODEL, messages=HELLO)
    assert "x-ratelimit-limit-requests" not in raw.headers


def test_tokens_per_minute_are_reserved_at_admission_and_corrected_at_settle(gw, up):
    _, _, secret = limited_key(gw, tpm=2000)
    client = openai_client(gw, secret)
    # ~1500 tokens estimated (max_tokens + the body's bytes); it uses a handful
    first = client.chat.completions.with_raw_response.create(model=MODEL, messages=HELLO,
                                                             max_tokens=1500)
    assert first.headers["x-ratelimit-limit-tokens"] == "2000"
    assert int(first.headers["x-ratelimit-remaining-tokens"]) < 500
    # counted at what it used: another fits in the same minute
    second = client.chat.completions.with_raw_response.create(model=MODEL, messages=HELLO,
                                                              max_tokens=1500)
    assert int(second.headers["x-ratelimit-remaining-tokens"]) < 500
    # while one is in flight its whole estimate counts
    up["openai"].hang_next(2.0)
    slow = threading.Thread(target=lambda: client.chat.completions.create(
        model=MODEL, messages=HELLO, max_tokens=1500))
    slow.start()
    try:
        deadline = time.monotonic() + 5
        while up["openai"].pending_scripts and time.monotonic() < deadline:
            time.sleep(0.01)   # until the slow request reached the upstream
        with pytest.raises(openai.RateLimitError) as err:
            client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=1500)
        assert err.value.response.headers["x-ratelimit-limit-tokens"] == "2000"
        assert int(err.value.response.headers["Retry-After"]) >= 1
        assert "2000 tokens per minute" in err.value.message
    finally:
        slow.join(10)
    after = client.chat.completions.with_raw_response.create(model=MODEL, messages=HELLO,
                                                             max_tokens=1500)
    assert after.headers["x-ratelimit-limit-tokens"] == "2000"
    # a request that could never fit is told so
    with pytest.raises(openai.RateLimitError) as err:
        client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=5000)
    assert "more than this API key's limit of 2000 tokens" in err.value.message


def test_a_request_refused_at_the_hold_gives_its_tokens_back(gw, up):
    _, key_id, secret = limited_key(gw, tpm=2000, spend_limit_nano=1)
    client = openai_client(gw, secret)
    with pytest.raises(openai.PermissionDeniedError) as err:
        client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=1500)
    assert "spend limit" in err.value.message
    assert not up["openai"].requests
    gw.store.update_key_limits(key_id, {"spend_limit_nano": None})
    # the refused request's ~1600 tokens no longer count: this one fits
    client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=1500)


def test_an_expired_key_is_a_401_saying_so(gw, up):
    _, key_id, secret = limited_key(gw, expires_at=datetime.now(UTC) + timedelta(hours=1))
    client = openai_client(gw, secret)
    client.chat.completions.create(model=MODEL, messages=HELLO)
    gw.store.update_key_limits(key_id, {"expires_at": datetime.now(UTC) - timedelta(seconds=1)})
    with pytest.raises(openai.AuthenticationError) as err:
        client.chat.completions.create(model=MODEL, messages=HELLO)
    assert "expired" in err.value.message
    with pytest.raises(openai.AuthenticationError):
        client.models.list()


def test_any_change_to_a_key_in_use_applies_to_its_next_request(gw, up):
    """Workers authenticate a key they have seen from a cache, and its hold checks that the
    key is unchanged: every change (models, expiry, spend limit, the account disabled,
    revocation), made by another process, refuses the next request of a worker that has the
    key cached, with nothing sent or charged; undoing it admits the next one again. A
    refusal that does not come from a change (the balance) stands, and a revoked key is a
    401 whatever else is wrong."""
    account, key_id, secret = limited_key(gw)
    name = gw.created[-1]
    client = openai_client(gw, secret)

    def served() -> None:
        for _ in range(4):   # the SDK's keep-alive connection: its worker caches the key
            reply = client.chat.completions.create(model=MODEL, messages=HELLO)
            assert reply.choices[0].message.content == "echo: hello there gateway"

    def refused(error: type[openai.APIStatusError]) -> openai.APIStatusError:
        spent, sent = charged(gw, account), len(up["openai"].requests)
        for _ in range(4):
            with pytest.raises(error) as err:
                client.chat.completions.create(model=MODEL, messages=HELLO)
        assert charged(gw, account) == spent and len(up["openai"].requests) == sent
        return err.value

    served()
    gw.store.update_key_limits(key_id, {"models": "openai/gpt-4o"})
    assert f"'{MODEL}'" in refused(openai.PermissionDeniedError).message
    gw.store.update_key_limits(key_id, {"models": None})
    served()
    gw.store.update_key_limits(key_id, {"expires_at": datetime.now(UTC) - timedelta(seconds=1)})
    assert "expired" in refused(openai.AuthenticationError).message
    gw.store.update_key_limits(key_id, {"expires_at": None})
    served()
    gw.store.update_key_limits(key_id, {"spend_limit_nano": 1})
    assert refused(openai.PermissionDeniedError).code == "spend_limit_reached"
    gw.store.update_key_limits(key_id, {"spend_limit_nano": None})
    served()
    gw.store.set_account_disabled(name, True)
    assert "disabled" in refused(openai.PermissionDeniedError).message
    gw.store.set_account_disabled(name, False)
    served()
    balance = gw.balance(account)
    gw.store.adjust(name, -balance)
    assert "Insufficient credits" in refused(openai.PermissionDeniedError).message
    gw.store.adjust(name, balance)
    served()
    with requests.Session() as session:   # one connection: one worker
        url, auth = f"{gw.base_url}/chat/completions", {"Authorization": f"Bearer {secret}"}
        assert session.post(url, json={"model": MODEL, "messages": HELLO}, headers=auth,
                            timeout=10).status_code == 200   # its worker has the key cached
        assert session.post(url, json={"model": MODEL}, headers=auth,
                            timeout=10).status_code == 400   # no messages
        gw.store.revoke_key(key_id)
        # the same malformed request from the revoked key: 401, not what it would be if the
        # key were still live
        answer = session.post(url, json={"model": MODEL}, headers=auth, timeout=10)
        assert answer.status_code == 401, answer.text
    assert refused(openai.AuthenticationError).body["code"] == 401


def spend_race(gw, up) -> None:
    """50 concurrent requests on a key whose spend limit pays for about ten: the sum charged
    stays within the limit, the refused get 403 naming it and are charged nothing."""
    prompt = [{"role": "user", "content": " ".join(["word"] * 40)}]
    probe_account, probe = gw.account(START_CREDITS)
    openai_client(gw, probe).chat.completions.create(model=MODEL, messages=prompt,
                                                     max_tokens=60)
    one = charged(gw, probe_account)
    limit = one * 10 + one // 2
    account, key_id, secret = limited_key(gw, spend_limit_nano=limit)
    client = openai_client(gw, secret, timeout=60)

    def call(_: int) -> str:
        try:
            client.chat.completions.create(model=MODEL, messages=prompt, max_tokens=60)
            return "ok"
        except openai.PermissionDeniedError as exc:
            assert "spend limit" in exc.message, exc.message
            return "refused"

    with ThreadPoolExecutor(50) as pool:
        outcomes = list(pool.map(call, range(50)))
    ok = outcomes.count("ok")
    assert 1 <= ok <= 10 and outcomes.count("refused") == 50 - ok
    spent = charged(gw, account)
    assert spent <= limit and spent == one * ok
    assert sum(r.cost_nano for r in usage_rows(gw, account)) == spent
    assert len(usage_rows(gw, account)) == ok
    key_spend = gw.store.key_spend(key_id)
    assert key_spend.total == spent and key_spend.held == 0
    assert key_spend.today == spent and key_spend.month == spent
    # one at a time, until what is left cannot hold one more: still never over
    while call(0) == "ok":
        ok += 1
    assert ok <= 10 and charged(gw, account) == one * ok <= limit
    assert gw.store.key_spend(key_id).total == one * ok


def test_a_spend_limit_is_never_passed_under_concurrency(gw, up):
    spend_race(gw, up)


@pytest.fixture(scope="module")
def pg_gw(fakes, gateway_factory):
    url = os.environ.get(PG_ENV)
    if not url:
        pytest.skip(f"{PG_ENV} not set: PostgreSQL tests need a server")
    return gateway_factory("gw-key-limits-pg", {**_env(fakes), "TOKMODEL_DATABASE_URL": url},
                           workers=2)


def test_a_spend_limit_is_never_passed_under_concurrency_on_postgresql(pg_gw, up):
    spend_race(pg_gw, up)


REDIS_ENV = "TOKMODEL_TEST_REDIS_URL"


@pytest.fixture(scope="module")
def nodes(fakes, gateway_factory, tmp_path_factory):
    """Two gateways (nodes) sharing one database and one Redis."""
    url = os.environ.get(REDIS_ENV)
    if not url:
        pytest.skip(f"{REDIS_ENV} not set: the Redis variant needs a server")
    shared = tmp_path_factory.mktemp("gw-key-limits-redis")
    env = {**_env(fakes), "TOKMODEL_REDIS_URL": url,
           "TOKMODEL_DATABASE_URL": f"sqlite:///{shared / 'tokmodel.db'}"}
    return (gateway_factory(shared / "a", env, workers=2),
            gateway_factory(shared / "b", env, workers=2))


def test_rate_limits_hold_across_nodes_with_redis(nodes, up):
    a, b = nodes
    _, key_id, secret = limited_key(a, rpm=3)
    clients = [openai_client(a, secret), openai_client(b, secret)]
    remaining = []
    for client in (clients[0], clients[1], clients[0]):
        raw = client.chat.completions.with_raw_response.create(model=MODEL, messages=HELLO)
        remaining.append(int(raw.headers["x-ratelimit-remaining-requests"]))
    assert remaining == [2, 1, 0]
    with pytest.raises(openai.RateLimitError) as err:
        clients[1].chat.completions.create(model=MODEL, messages=HELLO)
    assert int(err.value.response.headers["Retry-After"]) >= 1
    assert "3 requests per minute" in err.value.message
    # tokens: one node's request in flight holds its estimate for the other node too
    a.store.update_key_limits(key_id, {"rpm": None, "tpm": 2000})
    up["openai"].hang_next(2.0)
    slow = threading.Thread(target=lambda: clients[0].chat.completions.create(
        model=MODEL, messages=HELLO, max_tokens=1500))
    slow.start()
    try:
        deadline = time.monotonic() + 5
        while up["openai"].pending_scripts and time.monotonic() < deadline:
            time.sleep(0.01)
        with pytest.raises(openai.RateLimitError) as err:
            clients[1].chat.completions.create(model=MODEL, messages=HELLO, max_tokens=1500)
        assert "2000 tokens per minute" in err.value.message
    finally:
        slow.join(10)
    # settled: corrected to what it used, so the other node has room again
    clients[1].chat.completions.create(model=MODEL, messages=HELLO, max_tokens=1500)
    # the counts were in Redis, not in the database
    with a.store.write() as conn:
        rows = conn.execute(text("SELECT COUNT(*) FROM key_rates WHERE key_id = :k"),
                            {"k": key_id}).scalar()
    assert rows == 0
