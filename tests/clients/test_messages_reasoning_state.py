"""Anthropic Messages clients on translated providers: the provider's own reasoning state
(Gemini's thought signatures) leaves in a thinking block's signature, whole or streamed, and
comes back as that provider's own on the next request, where the Gemini adapter puts it on
the function call; another provider's state, an Anthropic signature or a value that does not
decode is dropped, and Anthropic models never receive the gateway's carrier blocks."""

from __future__ import annotations

import json
from typing import Any

from runtime.billing.pricing import Usage
from runtime.clients import messages_translation as mt
from runtime.clients import reasoning_state as rs
from runtime.clients.messages import carried_thinking_restored
from runtime.providers import CHAT_ADAPTERS
from runtime.sse import iter_events
from tests.translation_fixtures import CATALOGUE

SIGNATURE = "CiQBjz1rX2Vx"
CALL = {"id": "call_gx1", "type": "function",
        "function": {"name": "Bash", "arguments": '{"command":"date"}'},
        "extra_content": {"google": {"thought_signature": SIGNATURE}}}
TOOLS = [{"name": "Bash", "input_schema": {"type": "object",
                                           "properties": {"command": {"type": "string"}}}}]
SIGNED = {"type": "thinking", "thinking": "Need the date.", "signature": "EqQBsig"}


def completion(**message: Any) -> dict[str, Any]:
    return {"choices": [{"index": 0, "finish_reason": "tool_calls",
                         "message": {"role": "assistant", "content": None, **message}}],
            "usage": {"prompt_tokens": 5, "completion_tokens": 3}}


def answer(carry: str | None, **message: Any) -> list[dict[str, Any]]:
    return mt.to_message(completion(**message), "google/gemini-3-pro", Usage(), 0.0,
                         carry)["content"]


def streamed(carry: str | None, *deltas: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    writer = mt.EventWriter("google/gemini-3-pro", carry)
    out: list[bytes] = []
    for delta in deltas:
        out += writer.chunk({"choices": [{"index": 0, "delta": delta}]})
    out += writer.end(Usage(), 0.0)
    return [(e.event, json.loads(e.data)) for e in iter_events([b"".join(out)])]


def blocks_of(events: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    """The content blocks a client assembles from the events, as the SDKs do."""
    blocks: list[dict[str, Any]] = []
    for name, data in events:
        if name == "content_block_start":
            assert data["index"] == len(blocks)
            blocks.append(dict(data["content_block"]))
        elif name == "content_block_delta":
            block, delta = blocks[data["index"]], data["delta"]
            if delta["type"] == "thinking_delta":
                block["thinking"] += delta["thinking"]
            elif delta["type"] == "signature_delta":
                block["signature"] = delta["signature"]
            elif delta["type"] == "input_json_delta":
                block["partial"] = block.get("partial", "") + delta["partial_json"]
    for block in blocks:
        if "partial" in block:
            block["input"] = json.loads(block.pop("partial"))
    return blocks


def next_request(content: list[dict[str, Any]], tool_use_id: str) -> dict[str, Any]:
    """What Claude Code sends next: the assistant content as received and the Bash output."""
    return {"model": "google/gemini-3-pro", "max_tokens": 1000, "tools": TOOLS, "messages": [
        {"role": "user", "content": "run: date"},
        {"role": "assistant", "content": content},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": tool_use_id,
                                      "content": "Fri Dec  4"}]}]}


def gemini_contents(chat: dict[str, Any]) -> list[dict[str, Any]]:
    call = CHAT_ADAPTERS["gemini"].build(chat, CATALOGUE.get("google/gemini-2.5-pro"), False)
    return json.loads(call.body)["contents"]


# -- answers ----------------------------------------------------------------------------------

def test_whole_answer_carries_the_signature_in_a_thinking_block_before_the_call():
    thinking, use = answer("gemini", tool_calls=[CALL])
    assert thinking["type"] == "thinking" and thinking["thinking"] == ""
    assert rs.decode_carried(thinking["signature"]) == {
        "dialect": "gemini", "signatures": {"call_gx1": SIGNATURE}}
    assert use == {"type": "tool_use", "id": "call_gx1", "name": "Bash",
                   "input": {"command": "date"}}


def test_thought_summary_and_signature_share_one_thinking_block():
    content = answer("gemini", reasoning_content="Date needed.", tool_calls=[CALL])
    assert [b["type"] for b in content] == ["thinking", "tool_use"]
    assert content[0]["thinking"] == "Date needed."
    assert rs.decode_carried(content[0]["signature"])["signatures"] == {"call_gx1": SIGNATURE}


def test_nothing_to_carry_leaves_the_answer_as_before():
    unsigned = {k: v for k, v in CALL.items() if k != "extra_content"}
    assert [b["type"] for b in answer("gemini", tool_calls=[unsigned])] == ["tool_use"]
    assert answer("gemini", reasoning_content="Hm.", content="Hi")[0] == {
        "type": "thinking", "thinking": "Hm.", "signature": ""}
    assert [b["type"] for b in answer(None, tool_calls=[CALL])] == ["tool_use"]


def test_stream_without_thoughts_opens_a_thinking_block_of_its_own():
    events = streamed("gemini", {"role": "assistant", "content": ""},
                      {"tool_calls": [{**CALL, "index": 0}]})
    names = [(name, data.get("delta", data.get("content_block", {})).get("type"))
             for name, data in events]
    assert names[1:6] == [("content_block_start", "thinking"),
                          ("content_block_delta", "signature_delta"),
                          ("content_block_stop", None),
                          ("content_block_start", "tool_use"),
                          ("content_block_delta", "input_json_delta")]
    thinking, use = blocks_of(events)
    assert thinking["thinking"] == ""
    assert rs.decode_carried(thinking["signature"])["signatures"] == {"call_gx1": SIGNATURE}
    assert (use["id"], use["input"]) == ("call_gx1", {"command": "date"})


def test_stream_signature_joins_the_open_thinking_block_just_before_it_stops():
    events = streamed("gemini", {"reasoning_content": "Date "},
                      {"reasoning_content": "needed."},
                      {"tool_calls": [{**CALL, "index": 0}]})
    names = [name for name, _ in events]
    assert names[1:6] == ["content_block_start", "content_block_delta", "content_block_delta",
                          "content_block_delta", "content_block_stop"]
    assert events[4][1]["delta"]["type"] == "signature_delta"
    thinking, use = blocks_of(events)
    assert thinking["thinking"] == "Date needed."
    assert rs.decode_carried(thinking["signature"])["signatures"] == {"call_gx1": SIGNATURE}
    assert use["type"] == "tool_use"


def test_stream_after_text_puts_the_signature_between_the_text_and_its_call():
    events = streamed("gemini", {"content": "Let me look."},
                      {"tool_calls": [{**CALL, "index": 0}]})
    assert [b["type"] for b in blocks_of(events)] == ["text", "thinking", "tool_use"]


# -- the next request -------------------------------------------------------------------------

def test_signature_goes_back_onto_the_gemini_function_call():
    content = answer("gemini", tool_calls=[CALL])
    chat = mt.to_openai(next_request(content, "call_gx1"), "gemini")
    assert chat["messages"][1]["tool_calls"][0]["extra_content"] == {
        "google": {"thought_signature": SIGNATURE}}
    contents = gemini_contents(chat)
    assert contents[1] == {"role": "model", "parts": [
        {"functionCall": {"name": "Bash", "args": {"command": "date"}},
         "thoughtSignature": SIGNATURE}]}
    assert "functionResponse" in contents[2]["parts"][0]


def test_streamed_answer_sent_back_signs_the_call_too():
    blocks = blocks_of(streamed("gemini", {"reasoning_content": "Hm."},
                                {"tool_calls": [{**CALL, "index": 0}]}))
    chat = mt.to_openai(next_request(blocks, "call_gx1"), "gemini")
    assert gemini_contents(chat)[1]["parts"][0]["thoughtSignature"] == SIGNATURE


def test_a_gemini_call_id_the_client_sees_rewritten_still_finds_its_signature():
    odd = {**CALL, "id": "fc/1.2"}
    thinking, use = answer("gemini", tool_calls=[odd])
    assert use["id"] == "fc_1_2"
    chat = mt.to_openai(next_request([thinking, use], use["id"]), "gemini")
    assert chat["messages"][1]["tool_calls"][0]["extra_content"]["google"] == {
        "thought_signature": SIGNATURE}


def test_state_of_another_provider_or_undecodable_is_dropped():
    use = {"type": "tool_use", "id": "call_gx1", "name": "Bash", "input": {"command": "date"}}
    for signature in (rs.encode_carried("openai", {"signatures": {"call_gx1": "x"}}),
                      "tmr1.not-base64!", "tmr1." + "e30=",        # decodes to {}: no dialect
                      rs.encode_carried("gemini", {"signatures": ["call_gx1"]}),
                      SIGNED["signature"]):
        thinking = {"type": "thinking", "thinking": "", "signature": signature}
        chat = mt.to_openai(next_request([thinking, use], "call_gx1"), "gemini")
        assert chat["messages"][1] == {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_gx1", "type": "function",
             "function": {"name": "Bash", "arguments": '{"command":"date"}'}}]}
        assert "thoughtSignature" not in gemini_contents(chat)[1]["parts"][0]


def test_openai_format_models_drop_gemini_state():
    content = answer("gemini", tool_calls=[CALL])
    chat = mt.to_openai(next_request(content, "call_gx1"), "openai")
    assert "extra_content" not in chat["messages"][1]["tool_calls"][0]
    assert "thinking_blocks" not in chat["messages"][1]


# -- Anthropic models -------------------------------------------------------------------------

def test_anthropic_models_get_their_own_thinking_and_never_the_carrier():
    gemini_turn = answer("gemini", tool_calls=[CALL])
    body = next_request(gemini_turn, "call_gx1")
    body["messages"] += [{"role": "assistant", "content": [SIGNED, {"type": "text",
                                                                    "text": "Friday."}]},
                         {"role": "user", "content": "thanks"}]
    sent = carried_thinking_restored(body)
    assert sent["messages"][1]["content"] == [gemini_turn[1]]        # the tool_use only
    assert sent["messages"][3]["content"][0] == SIGNED
    assert body["messages"][1]["content"] == gemini_turn            # the request is unchanged

    plain = {"model": "m", "max_tokens": 5, "messages": [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": [SIGNED, {"type": "text", "text": "yo"}]}]}
    assert carried_thinking_restored(plain) is plain

    # state this gateway carried for Anthropic itself becomes Anthropic's blocks again
    own = {"type": "thinking", "thinking": "",
           "signature": rs.encode_carried("anthropic", {"thinking_blocks": [SIGNED]})}
    restored = carried_thinking_restored(dict(plain, messages=[
        plain["messages"][0], {"role": "assistant", "content": [own, {"type": "text",
                                                                      "text": "yo"}]}]))
    assert restored["messages"][1]["content"] == plain["messages"][1]["content"]
