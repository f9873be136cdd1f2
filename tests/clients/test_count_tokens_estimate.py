"""The documented input-token estimate of /v1/messages/count_tokens for providers without a
counter: 4 characters a token over every text the model reads, 1,600 per image or non-text
document, and the request as /v1/messages would translate it (no output cap, no stream)."""

from __future__ import annotations

import json
import math

from runtime.resources.count_tokens import MEDIA_TOKENS, chat_body, estimate_tokens

TOOL = {"name": "lookup", "input_schema": {"type": "object", "properties": {}}}


def test_every_text_the_model_reads_counts():
    body = {"model": "m", "system": [{"type": "text", "text": "sys"}], "tools": [TOOL],
            "messages": [
                {"role": "user", "content": "question"},
                {"role": "assistant", "content": [
                    {"type": "thinking", "thinking": "hmm", "signature": "s"},
                    {"type": "tool_use", "id": "t1", "name": "lookup", "input": {"q": "x"}}]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "t1",
                     "content": [{"type": "text", "text": "result"}]},
                    {"type": "document", "source": {"type": "text", "media_type": "text/plain",
                                                    "data": "plain doc"}},
                    {"type": "document", "source": {"type": "base64",
                                                    "media_type": "application/pdf",
                                                    "data": "JVBERi0="}}]}]}
    chars = (len("sys") + len("question") + len("hmm") + len(json.dumps({"q": "x"}))
             + len("lookup") + len("result") + len("plain doc") + len(json.dumps(TOOL)))
    assert estimate_tokens(body) == math.ceil(chars / 4) + MEDIA_TOKENS


def test_an_empty_prompt_is_zero():
    assert estimate_tokens({"model": "m", "messages": [{"role": "user", "content": ""}]}) == 0


def test_the_translated_request_has_no_output_cap_or_stream():
    body = {"model": "m", "max_tokens": 5, "stream": True,
            "messages": [{"role": "user", "content": "hi"}]}
    out = chat_body(body)
    assert out["messages"] == [{"role": "user", "content": "hi"}]
    assert "max_completion_tokens" not in out and "stream" not in out
    assert body["max_tokens"] == 5   # the client's request is left as received
