"""POST /v1/rerank end to end with `requests` against strict fake Cohere, Jina, Voyage and
vLLM-style servers: the native request each received, the gateway-style answer (sorted, cut
to top_n, documents only when asked), the exact charge per search or per token, and the
usage row recording the documents ranked next to what was billed (as the key's own usage
API shows it)."""

from __future__ import annotations

import pytest
import requests

from tests.fakes.media_stack import media_stack
from tests.pricing_oracle import per_munit, price, usd

pytestmark = pytest.mark.integration

START = 5_000_000_000
QUERY = "capital city of the united states"
DOCS = ["Carson City is the capital city of Nevada.",
        {"text": "Washington is the capital city of the United States."},
        "Bananas are yellow."]
TEXTS = [d if isinstance(d, str) else d["text"] for d in DOCS]


def fake_tokens() -> int:
    return sum(len(QUERY.split()) + len(t.split()) for t in TEXTS)


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    s = media_stack(tmp_path_factory.mktemp("rerank"))
    yield s
    s.stop()


@pytest.fixture
def account(stack):
    stack.reset()
    account_id, secret = stack.gateway.account(START)
    return account_id, secret


def rerank(stack, secret: str, **body) -> requests.Response:
    return requests.post(stack.gateway.base_url + "/rerank", json=body,
                         headers={"Authorization": f"Bearer {secret}"})


def own_usage(stack, secret: str) -> list[dict]:
    """The key's usage rows, newest first, from the own-account API, once settled."""
    stack.gateway.settled()
    answer = requests.get(stack.gateway.base_url + "/account/usage",
                          headers={"Authorization": f"Bearer {secret}"}, timeout=10)
    assert answer.status_code == 200, answer.text
    return answer.json()["data"]


def test_cohere_per_search(stack, account):
    account_id, secret = account
    resp = rerank(stack, secret, model="cohere/rerank-v3.5", query=QUERY, documents=DOCS,
                  top_n=2, return_documents=True)
    assert resp.status_code == 200, resp.text
    sent = stack.cohere.last
    assert sent.path == "/v2/rerank" and sent.headers["Authorization"] == "Bearer co-key"
    assert sent.body == {"model": "rerank-v3.5", "query": QUERY, "documents": TEXTS,
                         "top_n": 2}
    out = resp.json()
    assert out["model"] == "cohere/rerank-v3.5" and out["id"]
    assert [r["index"] for r in out["results"]] == [1, 0]
    assert out["results"][0]["document"] == {"text": TEXTS[1]}
    cost = usd(price("cohere/rerank-v3.5", "per_search"))
    assert out["usage"] == {"search_units": 1, "cost": cost / 1_000_000_000}
    assert stack.gateway.balance(account_id) == START - cost
    [row] = own_usage(stack, secret)
    assert row["endpoint"] == "rerank" and row["units"] == {"documents": 3, "searches": 1}


def test_the_documents_ranked_are_recorded_next_to_the_searches_billed(stack, account):
    _, secret = account
    docs = [f"document number {i}" for i in range(250)]
    resp = rerank(stack, secret, model="cohere/rerank-v3.5", query=QUERY, documents=docs,
                  top_n=5)
    assert resp.status_code == 200, resp.text
    billed = resp.json()["usage"]["search_units"]
    [row] = own_usage(stack, secret)
    assert row["units"]["documents"] == 250 and row["units"]["searches"] == billed
    totals = requests.get(stack.gateway.base_url + "/account/usage/totals",
                          headers={"Authorization": f"Bearer {secret}"}, timeout=10).json()
    assert totals["units"]["documents"] == 250 and totals["requests"] == 1


def test_jina_per_token_without_documents(stack, account):
    account_id, secret = account
    out = rerank(stack, secret, model="jina/jina-reranker-v2-base-multilingual", query=QUERY,
                 documents=DOCS).json()
    assert stack.jina.last.body == {"model": "jina-reranker-v2-base-multilingual",
                                    "query": QUERY, "documents": TEXTS}
    scores = [r["relevance_score"] for r in out["results"]]
    assert scores == sorted(scores, reverse=True) and len(scores) == 3
    assert all("document" not in r for r in out["results"])
    cost = per_munit(fake_tokens() * price("jina/jina-reranker-v2-base-multilingual",
                                           "input_per_mtok"))
    assert out["usage"]["total_tokens"] == fake_tokens()
    assert stack.gateway.balance(account_id) == START - cost
    [row] = own_usage(stack, secret)
    assert row["units"] == {"documents": 3} and row["prompt_tokens"] == fake_tokens()


def test_voyage_top_k_and_data(stack, account):
    account_id, secret = account
    out = rerank(stack, secret, model="voyage/rerank-2.5", query=QUERY, documents=DOCS,
                 top_n=1, return_documents=True).json()
    assert stack.voyage.last.body == {"model": "rerank-2.5", "query": QUERY,
                                      "documents": TEXTS, "top_k": 1}
    assert out["results"] == [{"index": 1, "relevance_score": out["results"][0][
        "relevance_score"], "document": {"text": TEXTS[1]}}]
    cost = per_munit(fake_tokens() * price("voyage/rerank-2.5", "input_per_mtok"))
    assert stack.gateway.balance(account_id) == START - cost


def test_vllm_compatible_server(stack, account):
    account_id, secret = account
    out = rerank(stack, secret, model="vllm/bge-reranker-v2-m3", query=QUERY,
                 documents=TEXTS, top_n=3).json()
    sent = stack.openai.last
    assert sent.path == "/v1/rerank"
    assert sent.body["model"] == "BAAI/bge-reranker-v2-m3"
    assert [r["index"] for r in out["results"]] == [1, 0, 2]
    assert out["usage"]["cost"] == 0 and stack.gateway.balance(account_id) == START


def test_refusals(stack, account):
    account_id, secret = account
    chat = rerank(stack, secret, model="openai/gpt-4o", query="q", documents=["a"])
    assert chat.status_code == 400
    assert "supports: chat" in chat.json()["error"]["message"]
    empty = rerank(stack, secret, model="cohere/rerank-v3.5", query="q", documents=[])
    assert empty.status_code == 400 and empty.json()["error"]["param"] == "documents"
    bad_doc = rerank(stack, secret, model="cohere/rerank-v3.5", query="q",
                     documents=[{"title": "no text"}])
    assert bad_doc.status_code == 400
    assert bad_doc.json()["error"]["param"].startswith("documents[0]")
    bad_top = rerank(stack, secret, model="cohere/rerank-v3.5", query="q", documents=["a"],
                     top_n="2")
    assert bad_top.status_code == 400 and bad_top.json()["error"]["param"] == "top_n"
    assert stack.cohere.requests == []
    stack.cohere.fail_next(429, headers={"Retry-After": "30"})
    limited = rerank(stack, secret, model="cohere/rerank-v3.5", query="q", documents=["a"])
    assert limited.status_code == 429 and limited.headers["Retry-After"] == "30"
    assert limited.json()["error"]["message"] == "Scripted failure 429."
    assert stack.gateway.balance(account_id) == START

