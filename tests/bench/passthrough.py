"""A bare Falcon passthrough, served exactly like the gateway: the yardstick `make bench`
divides the gateway's throughput by.

Contract
--------
- `make_app(upstream_base, key, pool_size)` returns a Falcon WSGI app that does nothing but
  the minimum any gateway must do:
  `POST /v1/chat/completions` answers 401 unless the `Authorization` header is exactly
  `Bearer <key>`; otherwise it sends the request body unchanged to
  `<upstream_base>/chat/completions` through one requests.Session per process (keep-alive
  pool of `pool_size` connections) and returns the upstream's status, Content-Type and body;
  an event stream (`text/event-stream`) is passed on piece by piece as it arrives (so the
  passthrough also streams), any other answer whole.
  `GET /ready` answers 200 (the harness's readiness probe, never timed).
  No accounts, validation, translation, charging, metrics or logging.
- `python -m tests.bench.passthrough --host H --port P --workers N` serves it through the
  same code path as `tokmodel serve --host H --port P --workers N` (runtime.cli), with only
  the WSGI app swapped in gunicorn's arbiter, so worker class, worker count, keepalive,
  worker_connections and timeouts are the gateway's by construction, whatever serve.py sets
  today. gunicorn's own access log is forced off (the passthrough logs nothing). Before the
  workers start it prints one line on stderr:
  `passthrough gunicorn settings: {json}` (`SETTINGS_MARK`), which the harness reports.
  Environment: BENCH_PASSTHROUGH_UPSTREAM (base URL ending in /v1), BENCH_PASSTHROUGH_KEY.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

SETTINGS_MARK = "passthrough gunicorn settings: "
REPORTED_SETTINGS = ("worker_class_str", "workers", "worker_connections", "keepalive",
                     "timeout", "graceful_timeout", "backlog", "threads", "max_requests",
                     "accesslog")


def make_app(upstream_base: str, key: str, pool_size: int = 1000) -> Any:
    # imported here, in the worker, after gevent has patched the standard library
    import falcon
    import requests
    from requests.adapters import HTTPAdapter

    target = upstream_base.rstrip("/") + "/chat/completions"
    expected = f"Bearer {key}"
    forward_headers = {"Content-Type": "application/json",
                       "Authorization": "Bearer sk-bench-upstream"}
    session = requests.Session()
    session.mount("http://", HTTPAdapter(pool_connections=1, pool_maxsize=pool_size))

    class Forward:
        def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
            if req.get_header("Authorization") != expected:
                raise falcon.HTTPUnauthorized(title="wrong or missing API key")
            answer = session.post(target, data=req.bounded_stream.read(),
                                  headers=forward_headers, timeout=(10, 600), stream=True)
            resp.status = answer.status_code
            resp.content_type = answer.headers.get("Content-Type", falcon.MEDIA_JSON)
            if resp.content_type.startswith("text/event-stream"):
                resp.stream = answer.raw.stream(65536, decode_content=True)
            else:
                resp.data = answer.content

    class Ready:
        def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
            resp.data = b"ok"

    app = falcon.App()
    app.add_route("/v1/chat/completions", Forward())
    app.add_route("/ready", Ready())
    return app


def _settings(cfg: Any) -> dict[str, Any]:
    out = {}
    for name in REPORTED_SETTINGS:
        try:
            out[name.removesuffix("_str")] = getattr(cfg, name)
        except AttributeError:
            continue
    return out


def serve(host: str, port: int, workers: int) -> int:
    """`tokmodel serve`, with gunicorn's arbiter handed the passthrough instead of the gateway."""
    from runtime.cli import main as tokmodel
    from tests.bench.served import adjust_arbiter

    upstream = os.environ["BENCH_PASSTHROUGH_UPSTREAM"]
    key = os.environ["BENCH_PASSTHROUGH_KEY"]

    def change(app: Any) -> None:
        if "accesslog" in app.cfg.settings:
            app.cfg.set("accesslog", None)
        pool = int(getattr(app.cfg, "worker_connections", 1000) or 1000)
        # an instance attribute wins over the gateway application's load(): the workers
        # build this app instead of the gateway's, with everything else left as serve set it
        app.load = lambda: make_app(upstream, key, pool)
        print(SETTINGS_MARK + json.dumps(_settings(app.cfg), default=str), file=sys.stderr,
              flush=True)

    adjust_arbiter(change)
    return tokmodel(["serve", "--host", host, "--port", str(port), "--workers", str(workers)])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.passthrough",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    return serve(args.host, args.port, args.workers) or 0


if __name__ == "__main__":
    raise SystemExit(main())
