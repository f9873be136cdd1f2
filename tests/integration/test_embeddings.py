"""POST /v1/embeddings end to end: the official openai SDK against the gateway under gunicorn,
in front of strict fake OpenAI, Gemini, Cohere and Jina servers. Each test checks what arrived
upstream, what the client got, and the exact charge (catalogue prices, Decimal, half up)."""

from __future__ import annotations

import base64
import math
import struct

import openai
import pytest
import requests

from tests.fakes.media_stack import media_stack
from tests.fakes.media_upstream import vector_value
from tests.harness import openai_client, usage_rows
from tests.pricing_oracle import per_munit, price

pytestmark = pytest.mark.integration

LONG = " ".join(f"word{i}" for i in range(600))  # 600 words


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    s = media_stack(tmp_path_factory.mktemp("embeddings"))
    yield s
    s.stop()


@pytest.fixture
def account(stack):
    stack.reset()
    account_id, secret = stack.gateway.account(5_000_000_000)
    client = openai_client(stack.gateway, secret)
    return account_id, secret, client


def expected_vector(i: int, dims: int) -> list[float]:
    return [vector_value(i, j) for j in range(dims)]


def test_openai_float(stack, account):
    account_id, _secret, client = account
    out = client.embeddings.create(model="openai/text-embedding-3-small",
                                   input=[LONG, "second text"], encoding_format="float")
    sent = stack.openai.last
    assert sent.path == "/v1/embeddings"
    assert sent.headers["Authorization"] == "Bearer sk-up"
    assert sent.body == {"model": "text-embedding-3-small", "input": [LONG, "second text"],
                         "encoding_format": "float"}
    assert [d.index for d in out.data] == [0, 1]
    assert out.data[1].embedding == expected_vector(1, 1536)
    assert out.model == "openai/text-embedding-3-small"
    tokens = 600 + 2
    assert out.usage.prompt_tokens == tokens
    cost = per_munit(tokens * price("openai/text-embedding-3-small", "input_per_mtok"))
    assert cost == 12_040  # 602 tokens at 20 nano-credits each
    assert stack.gateway.balance(account_id) == 5_000_000_000 - cost
    assert out.usage.model_extra["cost"] == cost / 1_000_000_000


def test_a_four_token_request_costs_its_exact_price(stack, account):
    """0.02 USD per million tokens: 4 tokens cost 0.00000008 credit, 80 nano-credits (what
    micro-credits rounded to nothing)."""
    account_id, _secret, client = account
    raw = client.embeddings.with_raw_response.create(
        model="openai/text-embedding-3-small", input="one two three four",
        encoding_format="float")
    out = raw.parse()
    assert out.usage.prompt_tokens == 4
    assert out.usage.model_extra["cost"] == 0.00000008
    assert raw.http_response.json()["usage"]["cost"] == 0.00000008
    assert stack.gateway.balance(account_id) == 5_000_000_000 - 80
    [row] = usage_rows(stack.gateway, account_id)
    assert row.cost_nano == 80
    assert stack.gateway.audit(account_id)["ok"]


def test_openai_base64_default_and_dimensions(stack, account):
    account_id, _secret, client = account
    raw = client.embeddings.with_raw_response.create(
        model="openai/text-embedding-3-large", input=LONG, dimensions=256)
    assert stack.openai.last.body["encoding_format"] == "base64"
    assert stack.openai.last.body["dimensions"] == 256
    wire = raw.http_response.json()
    assert isinstance(wire["data"][0]["embedding"], str)
    out = raw.parse()
    assert out.data[0].embedding == expected_vector(0, 256)
    cost = per_munit(600 * price("openai/text-embedding-3-large", "input_per_mtok"))
    assert stack.gateway.balance(account_id) == 5_000_000_000 - cost


def test_token_arrays_pass_through_to_openai(stack, account):
    _id, _secret, client = account
    out = client.embeddings.create(model="openai/text-embedding-3-small",
                                   input=[[1, 2, 3], [4, 5]], encoding_format="float")
    assert stack.openai.last.body["input"] == [[1, 2, 3], [4, 5]]
    assert out.usage.prompt_tokens == 5
    assert len(out.data) == 2


def test_google_float_base64_order_dimensions_and_estimated_usage(stack, account):
    account_id, _secret, client = account
    texts = [LONG, "b" * 10, "c" * 3]
    out = client.embeddings.create(model="google/gemini-embedding-001", input=texts,
                                   dimensions=768)
    sent = stack.gemini.last
    assert sent.path == "/v1beta/models/gemini-embedding-001:batchEmbedContents"
    assert sent.headers["x-goog-api-key"] == "goog-key"
    assert "Authorization" not in sent.headers
    assert sent.body == {"requests": [
        {"model": "models/gemini-embedding-001", "content": {"parts": [{"text": t}]},
         "outputDimensionality": 768} for t in texts]}
    assert [d.embedding for d in out.data] == [expected_vector(i, 768) for i in range(3)]
    tokens = sum(math.ceil(len(t) / 4) for t in texts)  # Gemini reports no usage
    assert out.usage.prompt_tokens == tokens
    cost = per_munit(tokens * price("google/gemini-embedding-001", "input_per_mtok"))
    assert stack.gateway.balance(account_id) == 5_000_000_000 - cost
    again = client.embeddings.with_raw_response.create(
        model="google/gemini-embedding-001", input="one", encoding_format="base64",
        dimensions=4)
    encoded = again.http_response.json()["data"][0]["embedding"]
    assert struct.unpack("<4f", base64.b64decode(encoded)) == tuple(expected_vector(0, 4))


def test_cohere_embed(stack, account):
    account_id, secret, client = account
    out = client.embeddings.create(model="cohere/embed-v4.0", input=[LONG, "x y"],
                                   dimensions=512, encoding_format="float")
    sent = stack.cohere.last
    assert sent.path == "/v2/embed"
    assert sent.body == {"model": "embed-v4.0", "texts": [LONG, "x y"],
                         "output_dimension": 512, "input_type": "search_document",
                         "embedding_types": ["float"]}
    assert out.data[1].embedding == expected_vector(1, 512)
    cost = per_munit(602 * price("cohere/embed-v4.0", "input_per_mtok"))
    assert out.usage.prompt_tokens == 602
    assert stack.gateway.balance(account_id) == 5_000_000_000 - cost


def test_jina_base64_encoded_by_gateway(stack, account):
    _id, _secret, client = account
    raw = client.embeddings.with_raw_response.create(model="jina/jina-embeddings-v3",
                                                     input="hello jina", dimensions=64)
    sent = stack.jina.last
    assert sent.body == {"model": "jina-embeddings-v3", "input": "hello jina",
                         "dimensions": 64, "embedding_type": "float"}
    assert isinstance(raw.http_response.json()["data"][0]["embedding"], str)
    assert raw.parse().data[0].embedding == expected_vector(0, 64)


def test_refusals_are_4xx_without_charge_or_upstream_call(stack, account):
    account_id, secret, client = account
    url = stack.gateway.base_url + "/embeddings"
    auth = {"Authorization": f"Bearer {secret}"}
    cases = [
        (requests.post(url, data=b"{not json", headers={**auth, "Content-Type":
                                                         "application/json"}), 400, None),
        (requests.post(url, json={"model": "openai/text-embedding-3-small", "input": []},
                       headers=auth), 400, "input"),
        (requests.post(url, json={"model": "openai/text-embedding-3-small", "input": "x",
                                  "dimensions": 5000}, headers=auth), 400, "dimensions"),
        (requests.post(url, json={"model": "cohere/rerank-v3.5", "input": "x"},
                       headers=auth), 400, "model"),
        (requests.post(url, json={"model": "google/gemini-embedding-001", "input": [[1, 2]]},
                       headers=auth), 400, "input"),
        (requests.post(url, json={"model": "openai/nope", "input": "x"}, headers=auth),
         404, "model"),
    ]
    for resp, status, param in cases:
        assert resp.status_code == status, resp.text
        assert resp.json()["error"]["param"] == param
    assert "rerank" in cases[3][0].json()["error"]["message"]
    assert stack.openai.requests == [] and stack.gemini.requests == []
    assert stack.gateway.balance(account_id) == 5_000_000_000


def test_upstream_error_keeps_status_and_charges_nothing(stack, account):
    account_id, _secret, client = account
    stack.openai.fail_next(429, headers={"Retry-After": "60"})
    with pytest.raises(openai.RateLimitError) as err:
        client.embeddings.create(model="openai/text-embedding-3-small", input="x")
    assert err.value.response.headers["Retry-After"] == "60"
    for _ in range(3):  # every attempt
        stack.gemini.fail_next(503)
    with pytest.raises(openai.InternalServerError):
        client.embeddings.create(model="google/gemini-embedding-001", input="x")
    assert stack.gateway.balance(account_id) == 5_000_000_000
