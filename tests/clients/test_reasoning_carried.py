"""Reasoning items of the Responses API over translated providers: the provider's own thinking
state (Anthropic's signed thinking blocks, Gemini's thought signatures) leaves in a reasoning
item's `encrypted_content` when the client asks for it, and comes back as that provider's
own on the next request; another provider's, or a foreign, reasoning item is dropped."""

from __future__ import annotations

import json
from typing import Any

from runtime.clients import responses_translation as ri
from runtime.providers import CHAT_ADAPTERS
from tests.translation_fixtures import CATALOGUE

SIGNED = {"type": "thinking", "thinking": "Need the date.", "signature": "EqQBsig"}
CALL = {"id": "toolu_1", "type": "function",
        "function": {"name": "exec_command", "arguments": '{"cmd":"date"}'}}


def completion(message: dict[str, Any]) -> dict[str, Any]:
    return {"choices": [{"index": 0, "message": {"role": "assistant", **message},
                         "finish_reason": "tool_calls"}],
            "usage": {"prompt_tokens": 5, "completion_tokens": 3}}


def response(message: dict[str, Any], carry: str | None) -> dict[str, Any]:
    return ri.from_chat(completion(message), ri.skeleton({}, "m", "resp_1"), carry=carry)


def next_turn(output: list[dict[str, Any]], call_id: str) -> list[dict[str, Any]]:
    """What Codex sends next: the user turn, the answer's items, the call's output."""
    return [{"role": "user", "content": "what day is it?"}, *output,
            {"type": "function_call_output", "call_id": call_id, "output": "Friday"}]


def test_signed_thinking_leaves_and_comes_back_to_anthropic():
    out = response({"content": None, "reasoning_content": "Need the date.",
                    "thinking_blocks": [SIGNED], "tool_calls": [CALL]}, "anthropic")["output"]
    reasoning, call = out
    assert reasoning["content"] == [{"type": "reasoning_text", "text": "Need the date."}]
    assert reasoning["encrypted_content"].startswith(ri.CARRIED_PREFIX)
    assert call["type"] == "function_call"

    messages = ri.chat_messages(next_turn(out, call["call_id"]), dialect="anthropic")
    assert messages[1]["thinking_blocks"] == [SIGNED]
    assert messages[1]["tool_calls"][0]["id"] == "toolu_1"

    # the adapter opens the assistant turn with the block, so thinking stays on in the loop
    model = CATALOGUE.get("anthropic/claude-sonnet-4-5")
    call_out = CHAT_ADAPTERS["anthropic"].build(
        {"model": "m", "messages": messages, "reasoning_effort": "low",
         "tools": [{"type": "function", "function": {"name": "exec_command", "parameters": {
             "type": "object", "properties": {"cmd": {"type": "string"}}}}}]}, model, False)
    sent = json.loads(call_out.body)
    assert sent["thinking"] == {"type": "enabled", "budget_tokens": 2048}
    assert sent["messages"][1]["content"][0] == SIGNED
    assert sent["messages"][1]["content"][1]["type"] == "tool_use"

    # another provider cannot use Anthropic's thinking: dropped there
    assert "thinking_blocks" not in ri.chat_messages(next_turn(out, call["call_id"]),
                                                     dialect="gemini")[1]


def test_nothing_is_carried_unless_asked():
    out = response({"content": None, "reasoning_content": "Need the date.",
                    "thinking_blocks": [SIGNED], "tool_calls": [CALL]}, None)["output"]
    assert "encrypted_content" not in out[0]
    assert "thinking_blocks" not in ri.chat_messages(next_turn(out, "toolu_1"),
                                                     dialect="anthropic")[1]


def test_streamed_gemini_signature_rides_on_the_reasoning_before_its_call():
    machine = ri.ResponseEvents(ri.skeleton({}, "m", "resp_1"), carry="gemini")
    events = machine.start()
    events += machine.feed({"choices": [{"index": 0, "delta": {"reasoning_content": "Hm."}}]})
    call = {"index": 0, "id": "call_gx1", "type": "function",
            "function": {"name": "exec_command", "arguments": '{"cmd":"date"}'},
            "extra_content": {"google": {"thought_signature": "c2ln"}}}
    events += machine.feed({"choices": [{"index": 0, "delta": {"tool_calls": [call]},
                                         "finish_reason": "tool_calls"}]})
    events += machine.finish(ri.response_usage({}))
    done = [e["item"] for e in events if e["type"] == "response.output_item.done"]
    assert [i["type"] for i in done] == ["reasoning", "function_call"]
    assert ri.decode_carried(done[0]["encrypted_content"]) == {
        "dialect": "gemini", "signatures": {"call_gx1": "c2ln"}}

    messages = ri.chat_messages(next_turn(done, "call_gx1"), dialect="gemini")
    assert messages[1]["tool_calls"][0]["extra_content"] == {
        "google": {"thought_signature": "c2ln"}}


def test_streamed_signature_without_thoughts_gets_a_reasoning_item_of_its_own():
    machine = ri.ResponseEvents(ri.skeleton({}, "m", "resp_1"), carry="gemini")
    call = {"index": 0, "id": "call_gx1", "type": "function",
            "function": {"name": "f", "arguments": "{}"},
            "extra_content": {"google": {"thought_signature": "c2ln"}}}
    events = machine.feed({"choices": [{"index": 0, "delta": {"tool_calls": [call]}}]})
    events += machine.finish(ri.response_usage({}))
    done = [e["item"] for e in events if e["type"] == "response.output_item.done"]
    assert [i["type"] for i in done] == ["reasoning", "function_call"]
    assert done[0]["summary"] == [] and "content" not in done[0]
    assert [e["output_index"] for e in events if e["type"] == "response.output_item.done"] \
        == [0, 1]


def test_foreign_reasoning_is_dropped_and_own_reasoning_never_reaches_openai():
    own = {"type": "reasoning", "id": "rs_1", "summary": [],
           "encrypted_content": ri.encode_carried("anthropic", {"thinking_blocks": [SIGNED]})}
    openai = {"type": "reasoning", "id": "rs_2", "summary": [],
              "encrypted_content": "gAAAAB-opaque"}
    user = {"role": "user", "content": "hi"}
    assert ri.chat_messages([user, openai, {"role": "assistant", "content": "yo"}],
                            dialect="anthropic") == [
        {"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]
    assert ri.own_reasoning_dropped([user, own, openai]) == [user, openai]
    assert ri.decode_carried("tmr1.not-base64!") is None
