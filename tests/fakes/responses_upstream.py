"""A strict fake of OpenAI's native Responses API (`POST /v1/responses`, `/v1/responses/compact`).

Contract
--------
``FakeResponses`` (built on ``tests.fakes.http_fake.FakeServer``) serves 127.0.0.1; ``base_url``
ends in ``/v1`` like OpenAI's. Every request is recorded before it is judged. It rejects what
the real API rejects, with OpenAI's envelope ``{"error":{"message","type","param","code"}}``:
401 without ``Authorization: Bearer <api_key>``; 400 for an unknown top-level field, a missing
``model``/``input``, input items that are not objects with a known type, function tools that
are not flat (``function`` nested, no ``name``), a ``compaction`` item whose
``encrypted_content`` this fake did not issue, ``previous_response_id`` naming no response it
produced; 404 for a model outside ``models``.

Deterministic answers: ``"echo: " + <text of the last user message>``; after a
``function_call_output`` item, ``"echo: " + <its output>``; with ``text.format`` json_schema /
json_object the text is ``{"echo": <that text>}``. With function tools and the last user text
mentioning "weather" (or ``tool_choice`` "required"/a named function) the output is one
``function_call`` (arguments ``{"city": "Oslo"}``) of the first function tool, which may be a
member of a ``namespace`` tool group (then the item carries ``namespace``, as OpenAI's does).
A line ``run: C`` in the last user text, with a coding agent's shell tool declared
(``exec_command``, ``shell``, ...) and tool_choice auto, is answered with a call of that tool
running C (see ``tests.fakes.shell_call``). With a ``reasoning.effort`` (other than none) and
``include: ["reasoning.encrypted_content"]`` the output begins with a ``reasoning`` item
(empty summary, an opaque ``encrypted_content``, kept in ``issued_reasoning``), as a reasoning
model's does with ``store: false``.
Usage: ``input_tokens`` = words of instructions and all input texts (min 1), ``cached_tokens``
= the ``cached_tokens`` attribute, ``output_tokens`` = words of the answer (of the arguments
for a call) plus ``reasoning_tokens`` (words of ``"Thinking about <text>"`` with a reasoning
item, else 0).
With a hosted ``web_search*`` tool and the ``web_search`` attribute set, the answer's item
is preceded by one completed ``web_search_call`` item (a search),
streamed as its own output_item.added / .done.

Streams: real framing (``event:`` + ``data:``, ``type`` and ``sequence_number`` from 0):
created, in_progress, output_item.added, content_part.added, one output_text.delta per word
(three argument fragments for a call), the .done events, response.completed with usage; no
``[DONE]``. ``error_in_stream_after(n)``: the next stream sends ``n`` deltas, then an ``error``
event (nested ``error`` object) and ``response.failed`` without usage, and ends.
Compact: the user messages, then ``{"type":"compaction","encrypted_content":"enc_<hex>"}``,
usage as above with a 10-word summary as output.
"""

from __future__ import annotations

import json
import re
import secrets
import time
from collections.abc import Iterator
from typing import Any

from .http_fake import FakeServer, Received, Reject, Reply
from .shell_call import shell_call
from .sse import encode_event

FIELDS = frozenset({"model", "input", "instructions", "tools", "tool_choice", "parallel_tool_calls",
                    "max_tool_calls", "text", "reasoning", "previous_response_id", "conversation",
                    "store", "include", "stream", "stream_options", "max_output_tokens",
                    "temperature", "top_p", "top_logprobs", "truncation", "metadata", "user",
                    "safety_identifier", "prompt_cache_key", "prompt_cache_retention",
                    "service_tier", "background", "prompt", "context_management"})
COMPACT_FIELDS = frozenset({"model", "input", "instructions", "previous_response_id",
                            "prompt_cache_key", "prompt_cache_retention", "service_tier"})
# What POST /v1/responses/input_tokens takes: the input side of a create request.
COUNT_FIELDS = frozenset({"model", "input", "instructions", "tools", "tool_choice",
                          "parallel_tool_calls", "text", "reasoning", "previous_response_id",
                          "conversation", "truncation"})
ITEM_TYPES = ("message", "function_call", "function_call_output", "reasoning", "compaction",
              "item_reference")
_WORDS = re.compile(r"\S+\s*")
_WEATHER = re.compile(r"\bweather\b", re.IGNORECASE)


def words(text: Any) -> int:
    """Words of a text; a value of another JSON type (structured tool output) counts none."""
    return len(text.split()) if isinstance(text, str) else 0


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p["text"] for p in content if isinstance(p, dict)
                        and isinstance(p.get("text"), str))
    return ""


class FakeResponses(FakeServer):
    base_path = "/v1"
    routes = {("POST", "/responses"): "create", ("POST", "/responses/compact"): "compact",
              ("POST", "/responses/input_tokens"): "input_tokens",
              ("GET", "/responses/*"): "retrieve", ("DELETE", "/responses/*"): "delete"}

    def __init__(self, api_key: str | None = "sk-openai-upstream", *,
                 models: tuple[str, ...] | None = ("gpt-4o", "gpt-4o-mini"),
                 chunk_delay: float = 0.0) -> None:
        super().__init__(api_key, chunk_delay=chunk_delay)
        self.models = models
        self.cached_tokens = 0
        self.web_search = False
        self.issued: set[str] = set()
        self.issued_reasoning: list[str] = []   # encrypted_content of reasoning items, in order
        self.responses: set[str] = set()
        self.stored: dict[str, dict[str, Any]] = {}   # id -> the answer and its input
        self._stream_error: int | None = None

    def error_body(self, status: int, message: str, **extra: Any) -> dict[str, Any]:
        kind = "invalid_request_error" if status < 500 else "server_error"
        if status == 429:
            kind = "rate_limit_exceeded"
        return {"error": {"message": message, "type": kind, "param": extra.get("param"),
                          "code": extra.get("code")}}

    def error_in_stream_after(self, n: int) -> None:
        self._stream_error = n

    def reset(self) -> None:
        super().reset()
        self._stream_error = None
        self.cached_tokens = 0
        self.web_search = False
        with self.lock:
            self.issued_reasoning.clear()

    # -- validation --

    def _validate(self, body: Any, fields: frozenset[str], need_input: bool) -> None:
        if not isinstance(body, dict):
            raise Reject(400, "We could not parse the JSON body of your request.")
        unknown = sorted(set(body) - fields)
        if unknown:
            raise Reject(400, f"Unknown parameter: '{unknown[0]}'.", param=unknown[0],
                         code="unknown_parameter")
        if not isinstance(body.get("model"), str):
            raise Reject(400, "Missing required parameter: 'model'.", param="model")
        if self.models is not None and body["model"] not in self.models:
            raise Reject(404, f"The model `{body['model']}` does not exist.", param="model",
                         code="model_not_found")
        prev = body.get("previous_response_id")
        if prev is not None and prev not in self.responses:
            raise Reject(400, f"Previous response with id '{prev}' not found.",
                         param="previous_response_id")
        items = body.get("input")
        if items is None and need_input and prev is None:
            raise Reject(400, "Missing required parameter: 'input'.", param="input")
        for i, item in enumerate(items if isinstance(items, list) else ()):
            if not isinstance(item, dict):
                raise Reject(400, f"Invalid type for 'input[{i}]'.", param=f"input[{i}]")
            kind = item.get("type") or ("message" if "role" in item else None)
            if kind not in ITEM_TYPES:
                raise Reject(400, f"Invalid value for 'input[{i}].type'.",
                             param=f"input[{i}].type")
            if kind == "compaction" and item.get("encrypted_content") not in self.issued:
                raise Reject(400, "The encrypted content could not be decrypted.",
                             param=f"input[{i}].encrypted_content")
            if kind == "message" and item.get("role") not in ("user", "assistant", "system",
                                                               "developer"):
                raise Reject(400, f"Invalid value for 'input[{i}].role'.",
                             param=f"input[{i}].role")
        for i, tool in enumerate(body.get("tools") or ()):
            members = [(f"tools[{i}]", tool)]
            if tool.get("type") == "namespace":
                if not isinstance(tool.get("name"), str):
                    raise Reject(400, f"Missing required parameter: 'tools[{i}].name'.",
                                 param=f"tools[{i}].name")
                members = [(f"tools[{i}].tools[{k}]", m) for k, m in enumerate(tool["tools"])]
                if any(m.get("type") != "function" for _, m in members):
                    raise Reject(400, f"Invalid value for 'tools[{i}].tools': only function "
                                 "tools can be in a namespace.", param=f"tools[{i}].tools")
            for where, fn in members:
                if fn.get("type") == "function" and ("function" in fn
                                                     or not isinstance(fn.get("name"), str)):
                    raise Reject(400, f"Missing required parameter: '{where}.name'.",
                                 param=f"{where}.name")

    # -- answers --

    def _prompt_words(self, body: dict[str, Any]) -> int:
        total = words(body.get("instructions") or "")
        items = body.get("input")
        if isinstance(items, str):
            return max(1, total + words(items))
        for item in items or ():
            total += words(_text(item.get("content"))) + words(item.get("output") or "")
            total += words(item.get("arguments") or "")
        return max(1, total)

    def _answer(self, body: dict[str, Any]) -> dict[str, Any]:
        items = body.get("input")
        items = [{"role": "user", "content": items}] if isinstance(items, str) else items or []
        last = items[-1] if items else {}
        tools = []   # (namespace or None, function tool), namespaces in place
        for t in body.get("tools") or ():
            if t.get("type") == "function":
                tools.append((None, t))
            elif t.get("type") == "namespace":
                tools += [(t["name"], m) for m in t["tools"]]
        choice = body.get("tool_choice")
        text = ("echo: " + str(last.get("output")) if last.get("type") == "function_call_output"
                else "echo: " + _text(last.get("content")))
        call_name = call_namespace = None
        arguments = json.dumps({"city": "Oslo"})
        shell = (shell_call(_text(last.get("content")), [t["name"] for ns, t in tools if not ns])
                 if last.get("type") != "function_call_output" and choice in (None, "auto")
                 else None)
        if shell is not None:
            call_name, arguments = shell[0], json.dumps(shell[1])
        elif tools and last.get("type") != "function_call_output":
            if isinstance(choice, dict):
                call_name, call_namespace = choice.get("name"), choice.get("namespace")
            elif choice == "required" or (choice in (None, "auto")
                                           and _WEATHER.search(text)):
                call_namespace, call_name = tools[0][0], tools[0][1]["name"]
        text_conf = body.get("text") if isinstance(body.get("text"), dict) else {}
        fmt_conf = text_conf.get("format")
        fmt = fmt_conf.get("type") if isinstance(fmt_conf, dict) else None
        if fmt in ("json_schema", "json_object"):
            text = json.dumps({"echo": text})
        if call_name:
            item = {"type": "function_call", "id": "fc_" + secrets.token_hex(6),
                    "call_id": "call_" + secrets.token_hex(6), "name": call_name,
                    "arguments": arguments, "status": "completed"}
            if call_namespace:
                item["namespace"] = call_namespace
            out_words = words(item["arguments"])
        else:
            item = {"type": "message", "id": "msg_" + secrets.token_hex(6), "role": "assistant",
                    "status": "completed", "content": [
                        {"type": "output_text", "text": text, "annotations": [],
                         "logprobs": []}]}
            out_words = words(text)
        output = [item]
        reasoning = body.get("reasoning") if isinstance(body.get("reasoning"), dict) else {}
        thought = 0
        if reasoning.get("effort") not in (None, "none") and (
                "reasoning.encrypted_content" in (body.get("include") or ())):
            # The model's state for the next turn, opaque to the client (store: false).
            thought = words("Thinking about " + text)
            encrypted = "gAAAAB" + secrets.token_urlsafe(24)
            output.insert(0, {"type": "reasoning", "id": "rs_" + secrets.token_hex(6),
                              "summary": [], "encrypted_content": encrypted})
            with self.lock:
                self.issued_reasoning.append(encrypted)
        if self.web_search and any(str(t.get("type", "")).startswith("web_search")
                                   for t in body.get("tools") or ()):
            # a hosted web search ran before the answer: one web_search_call item
            output.insert(len(output) - 1, {
                "type": "web_search_call", "id": "ws_" + secrets.token_hex(6),
                "status": "completed", "action": {"type": "search", "query": text[:40]}})
        rid = "resp_" + secrets.token_hex(8)
        with self.lock:
            self.responses.add(rid)
        prompt = self._prompt_words(body)
        answer = {"id": rid, "object": "response", "created_at": int(time.time()),
                "status": "completed", "error": None, "incomplete_details": None,
                "instructions": body.get("instructions"), "model": body["model"] + "-2024-08-06",
                "output": output, "parallel_tool_calls": True, "previous_response_id":
                body.get("previous_response_id"), "store": body.get("store", True),
                "text": {"format": {"type": "text"}}, "tool_choice": choice or "auto",
                "tools": body.get("tools") or [], "truncation": "disabled", "metadata": {},
                "usage": {"input_tokens": prompt,
                          "input_tokens_details": {"cached_tokens": self.cached_tokens,
                                                   "cache_write_tokens": 0},
                          "output_tokens": out_words + thought,
                          "output_tokens_details": {"reasoning_tokens": thought},
                          "total_tokens": prompt + out_words + thought}}
        if body.get("store", True) is not False:
            items = body.get("input")
            with self.lock:
                self.stored[rid] = {"response": answer, "input": (
                    [{"type": "message", "role": "user", "content": items}]
                    if isinstance(items, str) else list(items or []))}
        return answer

    def create(self, req: Received) -> Reply:
        self._validate(req.body, FIELDS, need_input=True)
        answer = self._answer(req.body)
        with self.lock:
            self.usages.append(answer["usage"])
        if req.body.get("stream") is not True:
            return Reply.json(answer)
        with self.lock:
            fail, self._stream_error = self._stream_error, None
        return Reply(200, _stream(answer, fail), content_type="text/event-stream")

    def _stored(self, path: str) -> tuple[str, dict[str, Any]]:
        rid = path.removeprefix(self.base_path + "/responses/").removesuffix("/input_items")
        found = self.stored.get(rid)
        if found is None:
            raise Reject(404, f"Response with id '{rid}' not found.")
        return rid, found

    def retrieve(self, req: Received) -> Reply:
        _rid, found = self._stored(req.path)
        if req.path.endswith("/input_items"):
            return Reply.json({"object": "list", "data": found["input"], "has_more": False})
        return Reply.json(found["response"])

    def delete(self, req: Received) -> Reply:
        rid, _found = self._stored(req.path)
        with self.lock:
            del self.stored[rid]
        return Reply.json({"id": rid, "object": "response", "deleted": True})

    def input_tokens(self, req: Received) -> Reply:
        """OpenAI's counter: the create body without output settings; counts words of the
        input and of the tool definitions."""
        self._validate(req.body, COUNT_FIELDS, need_input=True)
        tools = json.dumps(req.body.get("tools")) if req.body.get("tools") else ""
        return Reply.json({"object": "response.input_tokens",
                           "input_tokens": self._prompt_words(req.body) + len(tools.split())})

    def compact(self, req: Received) -> Reply:
        self._validate(req.body, COMPACT_FIELDS, need_input=False)
        items = req.body.get("input")
        items = [{"role": "user", "content": items}] if isinstance(items, str) else items or []
        kept = [{"type": "message", "id": "msg_" + secrets.token_hex(4), "role": "user",
                 "status": "completed", "content": [{"type": "input_text",
                                                     "text": _text(i.get("content"))}]}
                for i in items if i.get("role") == "user"]
        enc = "enc_" + secrets.token_hex(8)
        with self.lock:
            self.issued.add(enc)
        prompt = self._prompt_words(req.body)
        return Reply.json({"id": "cmp_" + secrets.token_hex(6), "object": "response.compaction",
                           "created_at": int(time.time()), "output": [
                               *kept, {"type": "compaction", "id": "cmpi_1",
                                       "encrypted_content": enc}],
                           "usage": {"input_tokens": prompt,
                                     "input_tokens_details": {"cached_tokens": 0,
                                                              "cache_write_tokens": 0},
                                     "output_tokens": 10,
                                     "output_tokens_details": {"reasoning_tokens": 0},
                                     "total_tokens": prompt + 10}})


def _stream(answer: dict[str, Any], fail_after: int | None) -> Iterator[bytes]:
    seq = 0

    def ev(data: dict[str, Any]) -> bytes:
        nonlocal seq
        data = {"type": data["type"], "sequence_number": seq, **data}
        seq += 1
        return encode_event(data, event=data["type"])

    shell = {**answer, "status": "in_progress", "output": [], "usage": None}
    yield ev({"type": "response.created", "response": shell})
    yield ev({"type": "response.in_progress", "response": shell})
    *before, item = answer["output"]
    for index, reasoning in enumerate(before):
        yield ev({"type": "response.output_item.added", "output_index": index,
                  "item": reasoning})
        yield ev({"type": "response.output_item.done", "output_index": index,
                  "item": reasoning})
    index = len(before)
    base = {"item_id": item["id"], "output_index": index}
    if item["type"] == "function_call":
        yield ev({"type": "response.output_item.added", "output_index": index,
                  "item": {**item, "arguments": "", "status": "in_progress"}})
        args = item["arguments"]
        pieces = [args[:5], args[5:12], args[12:]]
        for n, piece in enumerate(pieces):
            if fail_after is not None and n == fail_after:
                yield from _failure(ev, shell)
                return
            yield ev({"type": "response.function_call_arguments.delta", **base, "delta": piece})
        yield ev({"type": "response.function_call_arguments.done", **base, "arguments": args})
    else:
        text = item["content"][0]["text"]
        yield ev({"type": "response.output_item.added", "output_index": index,
                  "item": {**item, "status": "in_progress", "content": []}})
        yield ev({"type": "response.content_part.added", **base, "content_index": 0,
                  "part": {"type": "output_text", "text": "", "annotations": []}})
        for n, piece in enumerate(_WORDS.findall(text)):
            if fail_after is not None and n == fail_after:
                yield from _failure(ev, shell)
                return
            yield ev({"type": "response.output_text.delta", **base, "content_index": 0,
                      "delta": piece, "logprobs": []})
        yield ev({"type": "response.output_text.done", **base, "content_index": 0,
                  "text": text, "logprobs": []})
        yield ev({"type": "response.content_part.done", **base, "content_index": 0,
                  "part": item["content"][0]})
    yield ev({"type": "response.output_item.done", "output_index": index, "item": item})
    yield ev({"type": "response.completed", "response": answer})


def _failure(ev: Any, shell: dict[str, Any]) -> Iterator[bytes]:
    error = {"code": "server_error", "message": "The server had an error while processing.",
             "param": None}
    yield ev({"type": "error", "error": error})
    yield ev({"type": "response.failed", "response": {**shell, "status": "failed",
                                                        "error": error}})
