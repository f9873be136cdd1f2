"""Two gateway nodes sharing one PostgreSQL database: balances never overdraw under
concurrent load spread over both, every request is charged once, and a key revoked through
one node is refused by the other on its very next request, its own workers' caches of keys
notwithstanding."""

from __future__ import annotations

import threading

import pytest
import requests

from tests.fakes import FakeOpenAI
from tests.harness import postgres_schema

pytestmark = pytest.mark.integration



@pytest.fixture(scope="module")
def pg_url():
    with postgres_schema("tm_nodes_", "the multi-node tests need a PostgreSQL server") as url:
        yield url


@pytest.fixture(scope="module")
def nodes(pg_url, start_fakes, gateway_factory):
    fake = start_fakes(FakeOpenAI(api_key="sk-up"))
    env = {"TOKMODEL_DATABASE_URL": pg_url, "OPENAI_BASE_URL": fake.base_url,
           "OPENAI_API_KEY": "sk-up"}
    return (gateway_factory("node1", env, workers=2),
            gateway_factory("node2", env, workers=2))


def test_load_over_two_nodes_never_overdraws(nodes):
    first, second = nodes
    # a hold is about 90 bytes * 150 + 500 * 600 nano-credits: about three fit at a time
    account, secret = first.account(credits_nano=1_000_000)
    statuses: list[int] = []

    def call(node):
        resp = requests.post(f"{node.base_url}/chat/completions", timeout=30,
                             headers={"Authorization": f"Bearer {secret}"},
                             json={"model": "openai/gpt-4o-mini", "max_tokens": 500,
                                   "messages": [{"role": "user", "content": "hello there"}]})
        statuses.append(resp.status_code)

    threads = [threading.Thread(target=call, args=(nodes[i % 2],)) for i in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert set(statuses) <= {200, 403} and statuses.count(200) > 0
    second.settled(account)
    rows = second.store.usage(first.store.get_account_by_id(account).name, 1000)
    assert len([r for r in rows if r.status == 200]) == statuses.count(200)
    assert second.balance(account) == 1_000_000 - sum(r.cost_nano for r in rows) >= 0


def test_revocation_on_one_node_is_seen_by_the_other(nodes):
    first, second = nodes
    account, secret = first.account()
    auth = {"Authorization": f"Bearer {secret}"}
    chat = {"model": "openai/gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
    assert requests.get(f"{second.base_url}/models", headers=auth, timeout=5).status_code == 200
    for node in (first, second) * 4:   # every worker has the key in its cache
        assert requests.post(f"{node.base_url}/chat/completions", json=chat, headers=auth,
                             timeout=10).status_code == 200
    first.settled(account)
    balance = first.balance(account)
    name = first.store.get_account_by_id(account).name
    assert first.store.revoke_key(first.store.list_keys(name)[0].id)
    for node in (second, first, second, first):
        assert requests.get(f"{node.base_url}/models", headers=auth,
                            timeout=5).status_code == 401
        assert requests.post(f"{node.base_url}/chat/completions", json=chat, headers=auth,
                             timeout=10).status_code == 401
    assert second.balance(account) == balance
