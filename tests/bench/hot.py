"""Hot-path costs measured in-process: the store calls and the request validation that every
chat request pays.

Contract
--------
`measure(workdir, iterations)` opens a fresh SQLite store in `workdir` (WAL, as the gateway
does), creates one account and one key, and returns microseconds per call (median of per-call
wall times, and the mean) for `store.authenticate(secret)`, `store.hold(...)` (distinct
request ids), `store.settle(...)` (of those holds), and for
`Validator({'openai': 'generated.models.openai'}).check('openai',
'CreateChatCompletionRequest', body)` on the benchmark's chat body and on a larger one
(a 10-turn conversation with a tool). Each loop is bounded by `iterations` and a time budget.
"""

from __future__ import annotations

import statistics
import time
import uuid
from pathlib import Path
from typing import Any

CHAT_BODY: dict[str, Any] = {"model": "openai/gpt-4o-mini",
                             "messages": [{"role": "user", "content": "Say hi"}]}


def larger_body() -> dict[str, Any]:
    messages: list[dict[str, Any]] = [{"role": "system", "content": "You are terse."}]
    for i in range(5):
        messages.append({"role": "user", "content": f"Question {i}: what is {i} + {i}?"})
        messages.append({"role": "assistant", "content": f"{2 * i}"})
    return {"model": "openai/gpt-4o-mini", "messages": messages, "temperature": 0.2,
            "max_tokens": 256, "tools": [{"type": "function", "function": {
                "name": "get_weather", "description": "Weather for a city",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                               "required": ["city"]}}}]}


def _timed(fn: Any, args_list: list[tuple], budget: float) -> dict[str, float]:
    clock = time.perf_counter
    times = []
    deadline = clock() + budget
    for args in args_list:
        t0 = clock()
        fn(*args)
        times.append(clock() - t0)
        if t0 > deadline:
            break
    return {"median_us": statistics.median(times) * 1e6,
            "mean_us": statistics.fmean(times) * 1e6, "n": len(times)}


def measure(workdir: Path, iterations: int = 2000, budget: float = 10.0) -> dict[str, Any]:
    from runtime.store import UsageRecord, open_store
    from runtime.validation import Validator

    store = open_store(f"sqlite:///{workdir / 'hot.db'}")
    try:
        account = store.create_account("hot", 10**15)
        key, secret = store.create_key("hot", "hot")
        for _ in range(50):  # warm the pools and statement caches
            store.authenticate(secret)
        out: dict[str, Any] = {}
        out["authenticate"] = _timed(store.authenticate, [(secret,)] * iterations, budget)
        ids = ["req_" + uuid.uuid4().hex for _ in range(iterations)]
        out["hold"] = _timed(store.hold, [(rid, account.id, 10_000) for rid in ids], budget)
        held = ids[:out["hold"]["n"]]

        def record(rid: str) -> UsageRecord:
            return UsageRecord(request_id=rid, account_id=account.id, key_id=key.id,
                               endpoint="chat", model="openai/gpt-4o-mini", provider="openai",
                               status=200, prompt_tokens=9, completion_tokens=9,
                               cached_tokens=0, details={}, cost_nano=7, latency_ms=1)

        out["settle"] = _timed(store.settle, [(rid, 7, record(rid)) for rid in held], budget)
    finally:
        store.close()

    validator = Validator({"openai": "generated.models.openai"})
    check = validator.check
    check("openai", "CreateChatCompletionRequest", CHAT_BODY)
    out["validate"] = _timed(check, [("openai", "CreateChatCompletionRequest", CHAT_BODY)]
                             * iterations, budget)
    big = larger_body()
    check("openai", "CreateChatCompletionRequest", big)
    out["validate_10_turns_tool"] = _timed(
        check, [("openai", "CreateChatCompletionRequest", big)] * iterations, budget)
    return out
