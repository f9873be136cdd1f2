"""Where one worker's time goes per request: the gateway app in-process against the fast
fake upstream (`python -m tests.bench.profile [--requests N]`).

Contract
--------
Starts `tests.bench.upstream` in a subprocess (stopped at the end, also on Ctrl-C), builds the
app with `runtime.app.create_app` on a temporary SQLite store, and calls the WSGI app directly
with a prebuilt environ per request (no server, no event loop) for a non-streaming
`POST /v1/chat/completions`. Prints, in microseconds per request:
1. wall time per request without a profiler, split into phases by timing wrappers put around
   the gateway's own steps on this in-process instance (authenticate, body read + JSON +
   validation, model lookup, request mapping, hold, upstream call to headers, upstream body
   read + JSON, settle) and the rest (Falcon, response JSON, glue);
2. a cProfile of the same loop: self time grouped by library, and the top functions by self
   and by cumulative time.
Nothing in runtime/ is changed; the wrappers live on this process's objects only.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.bench.procs import Procs, free_port, wait_http

ROOT = Path(__file__).resolve().parents[2]
BODY = json.dumps({"model": "openai/gpt-4o-mini",
                   "messages": [{"role": "user", "content": "Say hi"}]}).encode()

GROUPS = [  # (label, path fragment) in match order
    ("runtime (gateway code)", "/runtime/"),
    ("generated", "/generated/"),
    ("falcon", "/falcon/"),
    ("requests", "/requests/"),
    ("urllib3", "/urllib3/"),
    ("sqlalchemy", "/sqlalchemy/"),
    ("pydantic", "/pydantic"),
    ("http.client / email (stdlib)", "/http/"),
    ("http.client / email (stdlib)", "/email/"),
    ("json (stdlib)", "/json/"),
    ("socket (stdlib)", "/socket.py"),
    ("uuid / decimal / datetime (stdlib)", "/uuid.py"),
]


def group_of(filename: str, funcname: str) -> str:
    for label, fragment in GROUPS:
        if fragment in filename:
            return label
    if filename == "~":
        if "sqlite3" in funcname or "execute" in funcname or "commit" in funcname:
            return "builtins: sqlite3"
        if "socket" in funcname or "recv" in funcname or "send" in funcname:
            return "builtins: socket I/O"
        return "builtins: other C calls"
    return "other python"


class Phases:
    def __init__(self) -> None:
        self.total: dict[str, float] = defaultdict(float)

    def wrap(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        total = self.total
        clock = time.perf_counter

        def timed(*args: Any, **kwargs: Any) -> Any:
            t0 = clock()
            try:
                return fn(*args, **kwargs)
            finally:
                total[name] += clock() - t0

        return timed


def build(upstream_port: int, workdir: Path) -> tuple[Any, str, Any]:
    from generated import registry
    from runtime.app import create_app
    from runtime.catalogue import load_catalogue
    from runtime.settings import Settings
    from runtime.store import open_store
    from runtime.upstream import Upstream

    settings = Settings(database_url=f"sqlite:///{workdir / 'profile.db'}")
    store = open_store(settings.database_url)
    store.create_account("profile", 10**15)
    _, secret = store.create_key("profile", "profile")
    catalogue = load_catalogue(env={"OPENAI_BASE_URL": f"http://127.0.0.1:{upstream_port}/v1",
                                    "OPENAI_API_KEY": "sk-bench-upstream"})
    app = create_app(settings, registry, store, Upstream(5, 30), catalogue)
    return app, secret, store


def instrument(app: Any, phases: Phases) -> None:
    """Timing wrappers around the gateway's steps, on this process's objects only."""
    import runtime.resources.chat as chat
    from runtime.dialects import CHAT_ADAPTERS

    resource = app._router.find("/v1/chat/completions")[0]
    gw = resource.gw
    gw.store.authenticate = phases.wrap("1 authenticate (store)", gw.store.authenticate)
    gw.validator.check = phases.wrap("2b validate (pydantic)", gw.validator.check)
    gw.json_body = phases.wrap("2 read body + JSON + validate", gw.json_body)
    gw.model_for = phases.wrap("3 model lookup", gw.model_for)
    adapter = CHAT_ADAPTERS["openai"]
    adapter.build = phases.wrap("4 map request (adapter.build)", adapter.build)
    gw.store.hold = phases.wrap("5 hold (store)", gw.store.hold)
    gw.upstream.send = phases.wrap("6 upstream call to headers (requests)", gw.upstream.send)
    chat.read_json = phases.wrap("7 upstream body + JSON parse", chat.read_json)
    gw.store.settle = phases.wrap("8 settle (store)", gw.store.settle)


def loop(app: Any, secret: str, n: int) -> float:
    from falcon import testing

    environs = []
    headers = {"Authorization": f"Bearer {secret}", "Content-Type": "application/json"}
    for _ in range(n):
        environs.append(testing.create_environ(method="POST", path="/v1/chat/completions",
                                               headers=headers, body=BODY))
    statuses: list[str] = []

    def start_response(status: str, _headers: Any, _exc: Any = None) -> None:
        statuses.append(status)

    clock = time.perf_counter
    t0 = clock()
    for environ in environs:
        result = app(environ, start_response)
        for _ in result:
            pass
        if hasattr(result, "close"):
            result.close()
    elapsed = clock() - t0
    bad = [s for s in statuses if not s.startswith("200")]
    if bad:
        raise RuntimeError(f"{len(bad)} requests failed, e.g. {bad[0]}")
    return elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.profile")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--save", type=Path, help="also write the raw cProfile stats here")
    args = parser.parse_args(argv)
    n = args.requests
    with tempfile.TemporaryDirectory(prefix="tokmodel-profile-") as tmp, Procs() as procs:
        workdir = Path(tmp)
        port = free_port()
        log = workdir / "upstream.log"
        proc = procs.start("upstream", [sys.executable, "-m", "tests.bench.upstream",
                                        "--port", str(port)],
                           env=dict(os.environ), log=log, cwd=ROOT)
        wait_http(("127.0.0.1", port), "/v1/models", proc, log)
        app, secret, store = build(port, workdir)
        try:
            loop(app, secret, 200)  # warm-up
            plain = loop(app, secret, n)
            phases = Phases()
            instrument(app, phases)
            timed = loop(app, secret, n)
            phase_totals = dict(phases.total)
            profiler = cProfile.Profile()
            profiler.enable()
            profiled = loop(app, secret, n)
            profiler.disable()
        finally:
            store.close()

    print(f"{n} non-streaming chat requests in-process against the fast upstream")
    print(f"wall per request: {plain / n * 1e6:.0f} us without wrappers, "
          f"{timed / n * 1e6:.0f} us with phase wrappers, {profiled / n * 1e6:.0f} us under "
          "cProfile\n")
    print("| phase | us/request | share |\n|---|---|---|")
    inner = sum(v for k, v in phase_totals.items() if k != "2b validate (pydantic)")
    for name, total in sorted(phase_totals.items()):
        print(f"| {name} | {total / n * 1e6:.1f} | {100 * total / timed:.0f}% |")
    rest = timed - inner
    print(f"| 9 rest: Falcon, response JSON, glue | {rest / n * 1e6:.1f} | "
          f"{100 * rest / timed:.0f}% |")

    if args.save:
        profiler.dump_stats(args.save)
    stats = pstats.Stats(profiler)
    groups: dict[str, float] = defaultdict(float)
    for (filename, _line, func), (_cc, _nc, tt, _ct, _callers) in stats.stats.items():
        groups[group_of(filename, func)] += tt
    total_tt = sum(groups.values())
    print("\nself time by library under cProfile (us/request, share):")
    for label, tt in sorted(groups.items(), key=lambda kv: -kv[1]):
        print(f"  {label:<36} {tt / n * 1e6:8.1f}  {100 * tt / total_tt:4.0f}%")
    for order in ("tottime", "cumulative"):
        buf = io.StringIO()
        pstats.Stats(profiler, stream=buf).strip_dirs().sort_stats(order).print_stats(args.top)
        text = buf.getvalue()
        print(f"\ntop {args.top} by {order}:")
        print(text[text.find("   ncalls"):].rstrip())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
