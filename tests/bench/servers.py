"""The servers of a bench run and the requests sent to them: the fast fake upstream, the real
gateway under `tokmodel serve`, the bare passthrough, and the `tokmodel` command line.

Contract
--------
`Bench(opts, workdir, procs)` starts every process through `procs` (so they are always
stopped) with logs in `workdir`, and reaches the gateway only over HTTP and through the
`tokmodel` command line:
- `start_upstream()` -> (host, port) of tests.bench.upstream (stream shape from `opts`; a
  request steers it with `bench:` directives in its message, see upstream.py);
- `tokmodel(*args, db=...)` runs the command on a database (default: `bench.main`, the
  SQLite file `bench.db`) and returns its stdout; `make_key(db, account, credits, *limits)`
  creates the account when needed and a key, and returns the key's secret (the first one on
  `bench.main` is also `bench.secret`);
- `start_gateway(workers, db=..., env=..., connections=..., probe=...)` -> `Server`:
  `tokmodel serve` as shipped, stdout (its access log) and stderr to files; `env` adds
  variables (diagnosis experiments); `connections` sets gunicorn's worker_connections, with
  `tokmodel serve --worker-connections` when the command has it, else through
  tests.bench.served (the same code path with the setting changed before the fork);
  `probe` puts tests/bench/probe first on the workers' PYTHONPATH (garbage-collection pauses
  to `Server.probe_dir`) and, with `opts.probe_hub`, turns on gevent's blocking monitor;
- `start_passthrough(workers)` -> `Server` for tests.bench.passthrough, same settings;
- `start_reference(workers)` -> `Server` for `opts.reference`/falcon_passthrough.py (the
  bare passthrough of ../shared/bench) served as its docstring says: gunicorn's stock
  gevent worker, 1,000 worker connections, `workers` workers;
- `chat(addr, stream=..., secret=..., content=..., model=...)` -> request bytes.
`serve_has_worker_connections()` says whether `tokmodel serve` offers the option.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, NamedTuple

from tests.bench import load
from tests.bench.databases import Database, sqlite
from tests.bench.options import Options
from tests.bench.passthrough import SETTINGS_MARK
from tests.bench.procs import Procs, children, free_port, wait_http

ROOT = Path(__file__).resolve().parents[2]
PROBE_DIR = Path(__file__).resolve().parent / "probe"
REFERENCE_DIR = ROOT.parent / "shared" / "bench"
REFERENCE_APP = "falcon_passthrough.py"
# how its docstring serves it (the workers are the gateway's count)
REFERENCE_SERVED = {"worker_class": "gevent", "worker_connections": 1000}
HOST = "127.0.0.1"
MODEL = "openai/gpt-4o-mini"
MESSAGES = [{"role": "user", "content": "Say hi"}]


def gateway_env(db_url: str, upstream_port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not (k.endswith("_API_KEY") or k.endswith("_BASE_URL")
                   or k.startswith("TOKMODEL_"))}
    env.update(TOKMODEL_DATABASE_URL=db_url, PYTHONUNBUFFERED="1",
               OPENAI_BASE_URL=f"http://{HOST}:{upstream_port}/v1",
               OPENAI_API_KEY="sk-bench-upstream")
    return env


@functools.cache
def serve_has_worker_connections() -> bool:
    done = subprocess.run([sys.executable, "-m", "runtime.cli", "serve", "--help"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    return "--worker-connections" in done.stdout


class Server(NamedTuple):
    proc: Any
    addr: tuple[str, int]
    pids: list[int]
    log: Path
    stdout: Path | None
    probe_dir: Path | None


class Bench:
    def __init__(self, opts: Options, workdir: Path, procs: Procs) -> None:
        self.opts = opts
        self.workdir = workdir
        self.procs = procs
        self.main = sqlite(workdir / "bench.db", "SQLite")
        self.db_path = workdir / "bench.db"
        self.logs: list[Path] = []
        self.access_logs: list[Path] = []
        self.passthrough_log = workdir / "passthrough.log"
        self.secret = ""
        self.upstream_port = 0
        self.upstream_pid = 0

    # processes

    def start_upstream(self) -> tuple[str, int]:
        port = free_port()
        log = self.workdir / "upstream.log"
        proc = self.procs.start(
            "upstream",
            [sys.executable, "-m", "tests.bench.upstream", "--port", str(port),
             "--workers", str(self.opts.upstream_workers),
             "--chunks", str(self.opts.stream_seconds),
             "--delay", str(self.opts.stream_interval)],
            env={**os.environ, "PYTHONUNBUFFERED": "1"}, log=log, cwd=ROOT)
        wait_http((HOST, port), "/v1/models", proc, log)
        self.upstream_pid = proc.pid
        self.upstream_port = port
        return HOST, port

    def tokmodel(self, *args: str, db: Database | None = None, root: Path = ROOT) -> str:
        """Run the `tokmodel` command line (of the checkout in `root`) on a database; return
        its stdout."""
        url = (db or self.main).url
        done = subprocess.run([sys.executable, "-m", "runtime.cli", *args], cwd=root,
                              env=gateway_env(url, self.upstream_port),
                              capture_output=True, text=True, timeout=600)
        if done.returncode != 0:
            raise RuntimeError(f"tokmodel {' '.join(args)} failed ({done.returncode}):\n"
                               + done.stderr[-2000:])
        return done.stdout

    def make_key(self, db: Database | None = None, account: str = "bench",
                 credits: str = "1000000000", *limits: str, root: Path = ROOT) -> str:
        db = db or self.main
        listed = self.tokmodel("accounts", "list", "--json", db=db, root=root)
        if account not in {a["name"] for a in json.loads(listed or "[]")}:
            self.tokmodel("accounts", "create", account, "--credits", credits, db=db,
                          root=root)
        secret = self.tokmodel("keys", "create", "--account", account, "--name", account,
                               *limits, db=db, root=root).strip().splitlines()[-1].strip()
        if db is self.main and not self.secret:
            self.secret = secret
        return secret

    def _start_server(self, name: str, argv: list[str], env: dict[str, str], ready: str,
                      workers: int, log: Path, stdout: Path | None = None,
                      probe_dir: Path | None = None, root: Path = ROOT,
                      listen: list[str] | None = None,
                      ready_status: tuple[int, ...] = (200,)) -> Server:
        """`listen`: the arguments that bind the port and set the workers, with {port}
        (default: `tokmodel serve`'s)."""
        port = free_port()
        listen = listen or ["--host", HOST, "--port", "{port}", "--workers", str(workers)]
        proc = self.procs.start(name, [*argv, *(a.format(port=port) for a in listen)],
                                env=env, log=log, cwd=root, stdout=stdout)
        addr = (HOST, port)
        wait_http(addr, ready, proc, log, timeout=60, ready=ready_status)
        deadline = time.monotonic() + 30
        pids = children(proc.pid)
        while len(pids) < workers and time.monotonic() < deadline:
            time.sleep(0.1)
            pids = children(proc.pid)
        if len(pids) < workers:
            raise RuntimeError(f"{name} has {len(pids)} of {workers} workers")
        return Server(proc, addr, pids, log, stdout, probe_dir)

    def start_gateway(self, workers: int, db: Database | None = None,
                      env: dict[str, str] | None = None, connections: int = 0,
                      probe: bool = False, root: Path = ROOT) -> Server:
        """`tokmodel serve` as shipped (by the checkout in `root`); its stdout (the access
        log) goes to a file."""
        n = len(self.logs) + 1
        log = self.workdir / f"gateway-{n}-{workers}w.log"
        self.logs.append(log)
        self.access_logs.append(self.workdir / f"gateway-{n}-{workers}w.stdout")
        full_env = gateway_env((db or self.main).url, self.upstream_port)
        full_env.update(dict(self.opts.gateway_env))
        full_env.update(env or {})
        probe_dir = None
        if probe:
            probe_dir = self.workdir / f"probe-{n}"
            probe_dir.mkdir()
            full_env.update(BENCH_PROBE_DIR=str(probe_dir), PYTHONPATH=os.pathsep.join(
                [str(PROBE_DIR), *filter(None, [full_env.get("PYTHONPATH")])]))
            if self.opts.probe_hub > 0:
                full_env.update(GEVENT_MONITOR_THREAD_ENABLE="1",
                                GEVENT_MAX_BLOCKING_TIME=str(self.opts.probe_hub),
                                GEVENT_PRINT_BLOCKING_REPORTS="false")
        argv = [sys.executable, "-m", "runtime.cli", "serve"]
        if connections and serve_has_worker_connections():
            argv = [*argv, "--worker-connections", str(connections)]
        elif connections:
            argv = [sys.executable, "-m", "tests.bench.served", "--worker-connections",
                    str(connections), "--"]
        return self._start_server("gateway", argv, full_env, "/readyz", workers, log,
                                  stdout=self.access_logs[-1], probe_dir=probe_dir, root=root)

    def start_passthrough(self, workers: int) -> Server:
        """The bare passthrough under `tokmodel serve`'s gunicorn settings, on its own
        database and metrics directory so that it can never touch the gateway's."""
        self.passthrough_log = self.workdir / f"passthrough-{workers}w.log"
        env = gateway_env(f"sqlite:///{self.workdir / 'passthrough.db'}", self.upstream_port)
        env.update(BENCH_PASSTHROUGH_UPSTREAM=f"http://{HOST}:{self.upstream_port}/v1",
                   BENCH_PASSTHROUGH_KEY=self.secret,
                   PROMETHEUS_MULTIPROC_DIR=str(self.workdir / "passthrough-metrics"))
        (self.workdir / "passthrough-metrics").mkdir(exist_ok=True)
        return self._start_server(
            "passthrough", [sys.executable, "-m", "tests.bench.passthrough"], env, "/ready",
            workers, self.passthrough_log)

    def start_reference(self, workers: int) -> Server:
        """../shared/bench's passthrough, exactly as its docstring serves it. It has no
        readiness route: a GET on its one POST route answers 405 once it listens."""
        env = {**os.environ, "PYTHONUNBUFFERED": "1",
               "UPSTREAM_URL": f"http://{HOST}:{self.upstream_port}/v1/chat/completions",
               "UPSTREAM_KEY": "sk-bench-upstream", "GATEWAY_KEY": self.secret}
        argv = [sys.executable, "-m", "gunicorn", "-k", REFERENCE_SERVED["worker_class"],
                "--worker-connections", str(REFERENCE_SERVED["worker_connections"]),
                "--chdir", self.opts.reference,
                REFERENCE_APP.removesuffix(".py") + ":app"]
        return self._start_server(
            "reference", argv, env, "/v1/chat/completions", workers,
            self.workdir / f"reference-{workers}w.log",
            listen=["-w", str(workers), "--bind", f"{HOST}:{{port}}"], ready_status=(405,))

    def passthrough_settings(self) -> dict[str, Any]:
        try:
            for line in self.passthrough_log.read_text(errors="replace").splitlines():
                if line.startswith(SETTINGS_MARK):
                    return json.loads(line[len(SETTINGS_MARK):])
        except (OSError, ValueError):
            pass
        return {}

    # requests

    def chat(self, addr: tuple[str, int], stream: bool = False, secret: str | None = None,
             content: str | None = None, model: str = MODEL) -> bytes:
        messages = MESSAGES if content is None else [{"role": "user", "content": content}]
        body: dict[str, Any] = {"model": model, "messages": messages}
        if stream:
            body.update(stream=True, stream_options={"include_usage": True})
        return load.build_request(addr[0], addr[1], "/v1/chat/completions", body,
                                  {"Authorization": f"Bearer {secret or self.secret}"})
