"""The Falcon app in-process (falcon.testing), with a real SQLite store and a fake upstream:
routing, error rendering and accounting without gunicorn in between."""

from __future__ import annotations

import pytest
from falcon import testing

from generated import registry
from runtime.app import create_app
from runtime.catalogue import load_catalogue
from runtime.settings import Settings
from runtime.store import open_store
from runtime.upstream import Upstream
from tests.fakes import FakeOpenAI


@pytest.fixture(scope="module")
def fake():
    with FakeOpenAI(api_key="up-key") as server:
        yield server


@pytest.fixture
def env(tmp_path, fake):
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'db.sqlite'}", max_body_bytes=4096)
    store = open_store(settings.database_url)
    catalogue = load_catalogue(env={"OPENAI_BASE_URL": fake.base_url, "OPENAI_API_KEY": "up-key"})
    app = create_app(settings, registry, store, Upstream(2, 5), catalogue)
    account = store.create_account("acme", 1_000_000_000)
    _, secret = store.create_key("acme", "ci")
    yield testing.TestClient(app, headers={"Authorization": f"Bearer {secret}"}), store, account
    store.close()


def test_chat_round_trip_charges_the_account(env):
    client, store, account = env
    result = client.simulate_post("/v1/chat/completions", json={
        "model": "openai/gpt-4o-mini", "messages": [{"role": "user", "content": "hi there"}]})
    assert result.status_code == 200
    assert result.json["model"] == "openai/gpt-4o-mini"
    assert result.headers["x-request-id"].startswith("req_")
    charged = 1_000_000_000 - store.get_account("acme").balance_nano
    assert result.json["usage"]["cost"] == charged / 1_000_000_000
    assert [r.request_id for r in store.usage("acme")] == [result.headers["x-request-id"]]


def test_trailing_slash_and_unknown_routes(env):
    client, _, _ = env
    assert client.simulate_get("/v1/models/").status_code == 200
    missing = client.simulate_get("/v2/models")
    assert missing.status_code == 404
    assert missing.json["error"]["type"] == "not_found_error"


def test_wrong_method_is_405_in_the_envelope(env):
    client, _, _ = env
    result = client.simulate_get("/v1/chat/completions")
    assert result.status_code == 405
    assert set(result.json["error"]) == {"message", "type", "param", "code"}


def test_body_limit_is_413(env):
    client, store, _ = env
    result = client.simulate_post("/v1/chat/completions", json={
        "model": "openai/gpt-4o", "messages": [{"role": "user", "content": "x" * 5000}]})
    assert result.status_code == 413
    assert store.get_account("acme").balance_nano == 1_000_000_000


@pytest.mark.parametrize("body", [b"", b"[]", b"nul", b'{"model": 1, "messages": []}'])
def test_bad_bodies_are_400(env, body):
    client, _, _ = env
    result = client.simulate_post("/v1/chat/completions", body=body,
                                  headers={"Content-Type": "application/json"})
    assert result.status_code == 400
    assert result.json["error"]["type"] == "invalid_request_error"


def test_auth_header_forms(env):
    client, _, _ = env
    for headers in ({"Authorization": "Bearer"}, {"Authorization": "Basic abc"},
                    {"Authorization": "Bearer tm-unknown"}):
        result = client.simulate_get("/v1/models", headers=headers)
        assert result.status_code == 401
        assert result.json == {"error": {"message": "Invalid or missing API key.",
                                         "type": "authentication_error", "param": None,
                                         "code": 401}}


def test_readyz_reports_database(env):
    client, store, _ = env
    assert client.simulate_get("/readyz").json["database"] is True


def test_another_catalogue_file_is_served(tmp_path, fake):
    """TOKMODEL_PROVIDERS: a deployment selling one model under its own name and price."""
    path = tmp_path / "providers.yaml"
    path.write_text(
        "providers:\n  openai:\n"
        "models:\n  openai/house-model:\n    provider: openai\n    upstream: gpt-4o\n"
        "    endpoints: [chat]\n    max_output_tokens: 100\n"
        "    pricing: {input_per_mtok: 1000, output_per_mtok: 2000}\n")
    catalogue = load_catalogue(str(path), env={"OPENAI_BASE_URL": fake.base_url,
                                               "OPENAI_API_KEY": "up-key"})
    store = open_store(f"sqlite:///{tmp_path / 'other.db'}")
    app = create_app(Settings(), registry, store, Upstream(2, 5), catalogue)
    store.create_account("acme", 1_000_000_000)
    _, secret = store.create_key("acme")
    client = testing.TestClient(app, headers={"Authorization": f"Bearer {secret}"})
    assert [m["id"] for m in client.simulate_get("/v1/models").json["data"]] == [
        "openai/house-model"]
    result = client.simulate_post("/v1/chat/completions", json={
        "model": "openai/house-model", "messages": [{"role": "user", "content": "a b"}]})
    assert result.status_code == 200 and fake.last.body["model"] == "gpt-4o"
    usage = result.json["usage"]
    expected = (usage["prompt_tokens"] * 1000 + usage["completion_tokens"] * 2000) * 1000
    assert 1_000_000_000 - store.get_account("acme").balance_nano == expected
    gone = client.simulate_post("/v1/chat/completions", json={
        "model": "openai/gpt-4o", "messages": [{"role": "user", "content": "a b"}]})
    assert gone.status_code == 404
    store.close()


def test_root_answers_the_probe_clients_send_first(env):
    """Claude Code sends HEAD / before its first request; no key is needed for it."""
    client, _, _ = env
    assert client.simulate_head("/", headers={"Authorization": ""}).status_code == 200
    root = client.simulate_get("/", headers={"Authorization": ""})
    assert root.status_code == 200 and root.json["api"] == "/v1"
