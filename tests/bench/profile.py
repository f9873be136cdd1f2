"""Where the gateway's CPU goes per request, by component (`make bench-profile`,
`python -m tests.bench.profile [--requests N]`).

Contract
--------
Starts `tests.bench.upstream` in a subprocess (stopped at the end, also on Ctrl-C), creates an
account and a key with the `tokmodel` command line on a temporary SQLite database, builds the
app with `runtime.app.get_app()` (what gunicorn serves) from the environment
(TOKMODEL_DATABASE_URL, OPENAI_BASE_URL, OPENAI_API_KEY, and a PROMETHEUS_MULTIPROC_DIR of its
own so metrics stay on), and calls the WSGI app directly, no server and no event loop, with a
prebuilt environ per request for a non-streaming `POST /v1/chat/completions`. Everything the
app writes on stdout (the access log) goes to a file whose line count is reported.

Prints a Markdown table of CPU (and wall) microseconds per request by component (auth +
hold, validation, translation, upstream I/O, JSON, settle, metrics + logging, Falcon, other
gateway code, other), the process CPU and wall time per request without the profiler, and
the top functions by CPU. The breakdown comes from a sampler (SIGALRM every `--interval` s)
that weights each sample by the process CPU time used since the previous one. Each sampled
Python stack is classified from the innermost frame outwards by module path prefix
(`COMPONENTS`), so a helper (stdlib, sqlite3, uuid) counts for the component that called it;
store or billing work under a frame whose function name contains "settle" counts as settle.
Only module paths and that one name are used, never runtime internals, so the profile
survives refactors that move code between runtime/ packages (a new package lands in "other
gateway code" until a prefix names it). The shares are scaled onto the CPU per request
measured without the sampler. Linux/Unix only (setitimer).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections import Counter
from pathlib import Path
from types import CodeType, FrameType
from typing import Any

from tests.bench.procs import Procs, free_port, wait_http

ROOT = Path(__file__).resolve().parents[2]
BODY = json.dumps({"model": "openai/gpt-4o-mini",
                   "messages": [{"role": "user", "content": "Say hi"}]}).encode()

AUTH, SETTLE, OTHER = "auth + hold (store)", "settle (billing, store)", "other"
# (component, regular expression on the module path) in match order; a module path is the
# file's path relative to the checkout, to site-packages or to the standard library
COMPONENTS: list[tuple[str, str]] = [
    ("JSON encode/decode", r"^(json/|orjson|ujson|simplejson|falcon/media/json)"),
    ("metrics + logging", r"^(prometheus_client/|logging/|runtime/(.*/)?"
                          r"(metrics?|access_?log|logs?|logging|telemetry|observability)"
                          r"(/|\.py|_))"),
    ("validation", r"^(pydantic/|pydantic_core/|annotated_types/|jsonschema/|generated/models/"
                   r"|runtime/(.*/)?valid)"),
    ("upstream I/O (urllib3, http.client, sockets)",
     r"^(urllib3/|requests/|http/|email/|socket\.py|ssl\.py|selectors\.py|gevent/"
     r"|runtime/(.*/)?upstream)"),
    ("translation (client formats, provider adapters)",
     r"^(generated/translators/|runtime/(providers|clients|dialects|translat\w*)(/|\.py)"
     r"|runtime/(ops|sse|inbound)\.py)"),
    (SETTLE, r"^runtime/(.*/)?(billing|settl\w*)(/|\.py)"),
    (AUTH, r"^(runtime/(.*/)?store/|sqlalchemy/|psycopg\w*/|sqlite3/|redis/)"),
    ("Falcon (routing, request, response)", r"^falcon/"),
    ("other gateway code (resources, pipeline, errors)", r"^(runtime/|generated/)"),
]
_RULES = [(name, re.compile(pattern)) for name, pattern in COMPONENTS]
_SETTLE_NAME = re.compile(r"settl", re.IGNORECASE)

_PREFIXES = sorted({str(ROOT) + "/", *(p.rstrip("/") + "/" for p in (
    sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"],
    sysconfig.get_paths()["stdlib"], sysconfig.get_paths()["platstdlib"]))},
    key=len, reverse=True)


def module_path(filename: str) -> str:
    """`/work/main/runtime/store/x.py` -> `runtime/store/x.py`; `.../site-packages/falcon/app.py`
    -> `falcon/app.py`; `/usr/lib/python3.11/json/encoder.py` -> `json/encoder.py`."""
    for prefix in _PREFIXES:
        if filename.startswith(prefix):
            return filename[len(prefix):]
    marker = "site-packages/"
    if marker in filename:
        return filename.split(marker, 1)[1]
    return filename


class Sampler:
    """Samples the main thread's Python stack every `interval` s of wall time (SIGALRM, a
    high-resolution timer; CPU-time timers tick only every few ms) and weights each stack by
    the process CPU time and the wall time spent since the previous sample."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.codes: dict[int, CodeType] = {}  # keeps every sampled code object alive
        self.cpu: Counter[tuple[int, ...]] = Counter()  # stacks as ids: cheap to hash
        self.wall: Counter[tuple[int, ...]] = Counter()
        self.samples = 0

    def _on_signal(self, _signum: int, frame: FrameType | None) -> None:
        if frame is None or frame.f_code is self._own_code:
            return  # a signal that arrived while the previous sample was being taken
        cpu, wall = time.process_time(), time.perf_counter()
        codes = self.codes
        ids = []
        while frame is not None:
            code = frame.f_code
            key = id(code)
            if key not in codes:
                codes[key] = code
            ids.append(key)
            frame = frame.f_back
        stack = tuple(ids)
        self.cpu[stack] += cpu - self._cpu
        self.wall[stack] += wall - self._wall
        self.samples += 1
        self._cpu, self._wall = time.process_time(), time.perf_counter()  # handler excluded

    def stacks(self) -> list[tuple[tuple[CodeType, ...], float, float]]:
        """(stack innermost first, CPU seconds, wall seconds) for every sampled stack."""
        return [(tuple(self.codes[i] for i in ids), cpu, self.wall[ids])
                for ids, cpu in self.cpu.items()]

    def __enter__(self) -> Sampler:
        self._own_code = self._on_signal.__code__
        self._previous = signal.signal(signal.SIGALRM, self._on_signal)
        self._cpu, self._wall = time.process_time(), time.perf_counter()
        signal.setitimer(signal.ITIMER_REAL, self.interval, self.interval)
        return self

    def __exit__(self, *exc: object) -> None:
        signal.setitimer(signal.ITIMER_REAL, 0, 0)
        signal.signal(signal.SIGALRM, self._previous)


class Classifier:
    """Component of a sampled stack (innermost frame first), cached per code object."""

    def __init__(self) -> None:
        self.paths: dict[CodeType, str] = {}
        self.components: dict[CodeType, str | None] = {}

    def path(self, code: CodeType) -> str:
        found = self.paths.get(code)
        if found is None:
            found = self.paths[code] = module_path(code.co_filename)
        return found

    def component_of(self, code: CodeType) -> str | None:
        if code not in self.components:
            path = self.path(code)
            self.components[code] = next((name for name, rule in _RULES if rule.match(path)),
                                         None)
        return self.components[code]

    def classify(self, stack: tuple[CodeType, ...]) -> str:
        for depth, code in enumerate(stack):
            component = self.component_of(code)
            if component is None:
                continue
            if component in (AUTH, SETTLE):
                under_settle = any(_SETTLE_NAME.search(c.co_name)
                                   and self.path(c).startswith("runtime/")
                                   for c in stack[depth:])
                return SETTLE if under_settle else AUTH
            return component
        return OTHER


def _tokmodel(env: dict[str, str], *args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "runtime.cli", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise RuntimeError(f"tokmodel {' '.join(args)} failed:\n{done.stderr[-2000:]}")
    return done.stdout


def prepare(upstream_port: int, workdir: Path) -> str:
    """Point this process's environment at the temporary database and the fake upstream;
    create an account and a key through the command line; return the key's secret."""
    for name in list(os.environ):
        if name.startswith("TOKMODEL_") or name.endswith(("_API_KEY", "_BASE_URL")):
            del os.environ[name]
    metrics_dir = workdir / "metrics"
    metrics_dir.mkdir()
    os.environ.update(TOKMODEL_DATABASE_URL=f"sqlite:///{workdir / 'profile.db'}",
                      OPENAI_BASE_URL=f"http://127.0.0.1:{upstream_port}/v1",
                      OPENAI_API_KEY="sk-bench-upstream",
                      PROMETHEUS_MULTIPROC_DIR=str(metrics_dir))
    env = dict(os.environ)
    _tokmodel(env, "accounts", "create", "profile", "--credits", "1000000000")
    return _tokmodel(env, "keys", "create", "--account", "profile",
                     "--name", "profile").strip().splitlines()[-1].strip()


def environs(secret: str, n: int) -> list[dict[str, Any]]:
    from falcon import testing

    headers = {"Authorization": f"Bearer {secret}", "Content-Type": "application/json"}
    return [testing.create_environ(method="POST", path="/v1/chat/completions",
                                   headers=headers, body=BODY) for _ in range(n)]


def loop(app: Any, batch: list[dict[str, Any]]) -> tuple[float, float]:
    """Call the app once per environ; return (wall, process CPU) seconds."""
    statuses: list[str] = []

    def start_response(status: str, _headers: Any, _exc: Any = None) -> None:
        statuses.append(status)

    wall0, cpu0 = time.perf_counter(), time.process_time()
    for environ in batch:
        result = app(environ, start_response)
        for _ in result:
            pass
        if hasattr(result, "close"):
            result.close()
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    bad = [s for s in statuses if not s.startswith("200")]
    if bad:
        raise RuntimeError(f"{len(bad)} of {len(statuses)} requests failed, e.g. {bad[0]}")
    return wall, cpu


class StdoutTo:
    """Send file descriptor 1 (and so the app's access log) to a file for a while."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __enter__(self) -> StdoutTo:
        sys.stdout.flush()
        self.saved = os.dup(1)
        with self.path.open("ab") as target:
            os.dup2(target.fileno(), 1)
        return self

    def __exit__(self, *exc: object) -> None:
        sys.stdout.flush()
        os.dup2(self.saved, 1)
        os.close(self.saved)


def report(n: int, requests_total: int, plain: tuple[float, float],
           sampled: tuple[float, float], sampler: Sampler, top: int, app_lines: int) -> str:
    classifier = Classifier()
    cpu_by: Counter[str] = Counter()
    wall_by: Counter[str] = Counter()
    by_function: Counter[tuple[str, str, str]] = Counter()
    for stack, seconds, wall_seconds in sampler.stacks():
        component = classifier.classify(stack)
        cpu_by[component] += seconds
        wall_by[component] += wall_seconds
        by_function[(component, classifier.path(stack[0]), stack[0].co_name)] += seconds
    cpu_total = sum(cpu_by.values()) or 1.0
    wall_total = sum(wall_by.values()) or 1.0
    wall, cpu = plain[0] / n * 1e6, plain[1] / n * 1e6
    lines = [
        f"{n} non-streaming chat completions, the WSGI app (runtime.app:get_app()) called "
        "in-process against the fast fake upstream (another process).",
        f"Per request without the profiler: {cpu:.0f} us CPU, {wall:.0f} us wall; under the "
        f"sampler {sampled[1] / n * 1e6:.0f} us CPU ({sampler.samples:,} samples, one every "
        f"{sampler.interval * 1e6:.0f} us). App stdout (access log): {app_lines:,} lines for "
        f"{requests_total:,} requests.",
        "",
        "| Component | CPU us/request | CPU share | Wall us/request |",
        "|---|---:|---:|---:|",
    ]
    order = [name for name, _ in COMPONENTS] + [OTHER]
    for name in sorted(cpu_by, key=lambda c: (-cpu_by[c], order.index(c))):
        share = cpu_by[name] / cpu_total
        lines.append(f"| {name} | {share * cpu:.0f} | {100 * share:.0f}% | "
                     f"{wall_by[name] / wall_total * wall:.0f} |")
    lines.append(f"| **total** | **{cpu:.0f}** | 100% | {wall:.0f} |")
    lines += ["", "CPU per request is the shares scaled onto the CPU measured without the "
              "profiler; wall time includes waiting for the upstream (in upstream I/O).",
              "", f"Top {top} innermost Python functions by CPU (C calls count for their "
              "Python caller):", "", "| CPU share | Component | Function |", "|---:|---|---|"]
    for (component, path, func), seconds in by_function.most_common(top):
        lines.append(f"| {100 * seconds / cpu_total:.1f}% | {component} | {path}:{func} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.profile", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--warmup", type=int, default=300)
    parser.add_argument("--interval", type=float, default=0.0002,
                        help="sampling interval in seconds (wall clock)")
    parser.add_argument("--top", type=int, default=12)
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
        secret = prepare(port, workdir)
        from runtime.app import get_app

        app_out = workdir / "app-stdout.log"
        with StdoutTo(app_out):
            app = get_app()
            loop(app, environs(secret, args.warmup))
            plain = loop(app, environs(secret, n))
            sampler = Sampler(args.interval)
            batch = environs(secret, n)
            with sampler:
                sampled = loop(app, batch)
        with app_out.open("rb") as handle:
            app_lines = sum(1 for _ in handle)
    print(report(n, args.warmup + 2 * n, plain, sampled, sampler, args.top, app_lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
