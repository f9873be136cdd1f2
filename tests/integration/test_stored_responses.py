"""Stored Responses API conversations end to end, with the official openai SDK: kept by the
gateway for translated models, by the provider for native ones, and always owned by one
account (another account's id is a 404, nothing is forwarded or charged)."""

from __future__ import annotations

import openai
import pytest
import requests
import yaml

from tests.fakes.anthropic_upstream import FakeAnthropic
from tests.fakes.responses_upstream import FakeResponses
from tests.harness import ROOT, START_CREDITS, openai_client, reset_fakes

pytestmark = pytest.mark.integration

CLAUDE = "anthropic/claude-sonnet-4-5"
GPT = "openai/gpt-4o"


@pytest.fixture(scope="module")
def fakes(start_fakes):
    return start_fakes(east=FakeResponses(api_key="key-east"),
                       west=FakeResponses(api_key="key-west"),
                       anthropic=FakeAnthropic(api_key="anthropic-up"))


@pytest.fixture(scope="module")
def gw(fakes, gateway_factory, tmp_path_factory):
    catalogue = yaml.safe_load((ROOT / "providers.yaml").read_text())
    catalogue["providers"]["openai"] = {"deployments": [
        {"name": "east", "base_url": fakes["east"].base_url, "api_key_env": "OPENAI_EAST_KEY"},
        {"name": "west", "base_url": fakes["west"].base_url, "api_key_env": "OPENAI_WEST_KEY"}]}
    path = tmp_path_factory.mktemp("stored-catalogue") / "providers.yaml"
    path.write_text(yaml.safe_dump(catalogue))
    return gateway_factory("gw-stored", {
        "TOKMODEL_PROVIDERS": str(path), "OPENAI_EAST_KEY": "key-east",
        "OPENAI_WEST_KEY": "key-west", "ANTHROPIC_BASE_URL": fakes["anthropic"].base_url,
        "ANTHROPIC_API_KEY": "anthropic-up"}, workers=2)


def client(gw):
    account, secret = gw.account(START_CREDITS)
    return account, openai_client(gw, secret), secret


def test_translated_conversation_is_kept_and_continued(gw, fakes):
    reset_fakes(fakes)
    _, c, _ = client(gw)
    first = c.responses.create(model=CLAUDE, input="my name is Ada")
    assert first.store is True
    again = c.responses.retrieve(first.id)
    assert again.id == first.id and again.output_text == first.output_text
    items = c.responses.input_items.list(first.id)
    assert [i.content[0].text if isinstance(i.content, list) else i.content
            for i in items.data] == ["my name is Ada"]

    second = c.responses.create(model=CLAUDE, input="what is my name?",
                                previous_response_id=first.id)
    assert second.previous_response_id == first.id
    sent = fakes["anthropic"].last.body["messages"]
    assert [m["role"] for m in sent] == ["user", "assistant", "user"]
    assert "my name is Ada" in str(sent[0]) and "what is my name?" in str(sent[2])
    assert first.output_text in str(sent[1])


def test_streamed_translated_response_is_kept(gw, fakes):
    reset_fakes(fakes)
    _, c, _ = client(gw)
    events = list(c.responses.create(model=CLAUDE, input="stream me", stream=True))
    done = events[-1].response
    assert c.responses.retrieve(done.id).output_text == done.output_text


def test_another_accounts_response_is_not_found_and_costs_nothing(gw, fakes):
    reset_fakes(fakes)
    _, owner, _ = client(gw)
    kept = owner.responses.create(model=CLAUDE, input="private")
    native = owner.responses.create(model=GPT, input="private too")
    stranger_id, stranger, _ = client(gw)
    for response_id in (kept.id, native.id, "resp_never_issued"):
        with pytest.raises(openai.NotFoundError):
            stranger.responses.retrieve(response_id)
        with pytest.raises(openai.NotFoundError):
            stranger.responses.input_items.list(response_id)
        with pytest.raises(openai.NotFoundError):
            stranger.responses.delete(response_id)
    before = len(fakes["anthropic"].requests) + len(fakes["east"].requests) + len(
        fakes["west"].requests)
    for model, response_id in ((CLAUDE, kept.id), (GPT, native.id)):
        with pytest.raises(openai.NotFoundError) as err:
            stranger.responses.create(model=model, input="continue",
                                      previous_response_id=response_id)
        assert err.value.body["param"] == "previous_response_id"
    after = len(fakes["anthropic"].requests) + len(fakes["east"].requests) + len(
        fakes["west"].requests)
    assert after == before
    assert gw.balance(stranger_id) == START_CREDITS


def test_native_response_is_continued_on_the_deployment_that_stored_it(gw, fakes):
    reset_fakes(fakes)
    _, c, _ = client(gw)
    for _ in range(6):   # whichever deployment answers, the continuation must go there
        first = c.responses.create(model=GPT, input="remember 42")
        holder = "east" if first.id in fakes["east"].stored else "west"
        second = c.responses.create(model=GPT, input="what number?",
                                    previous_response_id=first.id)
        assert fakes[holder].last.body["previous_response_id"] == first.id
        assert second.previous_response_id == first.id
    assert c.responses.retrieve(first.id).id == first.id
    assert c.responses.input_items.list(first.id).data


def test_delete_and_store_false(gw, fakes):
    reset_fakes(fakes)
    _, c, secret = client(gw)
    for model in (CLAUDE, GPT):
        kept = c.responses.create(model=model, input="delete me")
        c.responses.delete(kept.id)
        with pytest.raises(openai.NotFoundError):
            c.responses.retrieve(kept.id)
        unkept = c.responses.create(model=model, input="do not keep", store=False)
        r = requests.get(f"{gw.base_url}/responses/{unkept.id}", timeout=10,
                         headers={"Authorization": f"Bearer {secret}"})
        assert r.status_code == 404
        assert r.json()["error"]["type"] == "invalid_request_error"


@pytest.mark.parametrize("model", [GPT, CLAUDE])
def test_continuation_is_held_for_the_stored_conversation(gw, fakes, model):
    """Native (the provider keeps the conversation) or translated (the gateway does): the
    continuation's hold counts the stored conversation, so a balance that covers the new
    message but not the 40,000 stored tokens is refused before anything is sent."""
    reset_fakes(fakes)
    account, c, _ = client(gw)
    first = c.responses.create(model=model, input="word " * 40_000, max_output_tokens=16)
    assert first.usage.input_tokens >= 40_000
    pin = "pin-" + first.id
    assert gw.store.hold(pin, account, gw.balance(account) - 20_000_000)
    try:
        sent = sum(len(f.requests) for f in fakes.values())
        with pytest.raises(openai.APIStatusError) as refused:
            c.responses.create(model=model, input="and then?", max_output_tokens=16,
                               previous_response_id=first.id)
        assert refused.value.status_code == 403
        assert sum(len(f.requests) for f in fakes.values()) == sent
        assert c.responses.create(model=model, input="and then?",
                                  max_output_tokens=16).output_text
    finally:
        gw.store.release(pin)
