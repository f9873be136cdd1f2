"""Background traffic of the soak: a weighted mix of request kinds at a steady rate, in its own
process so that its event loop never delays the harness's timed requests.

Contract
--------
`python -m tests.bench.traffic CONFIG OUT` reads CONFIG (JSON):
{"addr": [host, port], "seconds", "rate" (requests per second, spread at random),
"workers" (greenlets, each on its own keep-alive connection), "kinds": [{"name", "weight",
"request" (the request's bytes as latin-1 text), "stream" (the answer must end with
`data: [DONE]`), "hangup" (read the head and the first piece of the body, then close the
connection), "expect" (the statuses that count as right)}]} and sends requests until
`seconds` have passed: each worker waits for the next start time of a shared random
(Poisson) schedule, picks a kind by weight and sends it; a slow request delays only its own
worker. When it is done it writes OUT (JSON): {"seconds", "sent", "kinds": {name: {"sent",
"by_status", "unexpected", "unexpected_samples", "p50_ms", "p99_ms", "max_ms",
"failures"}}}; a failure is a broken connection or answer where none was expected.
Exits with its parent (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import json
import random
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from tests.bench.latency import percentile
from tests.bench.load import DONE_MARK, HttpConn
from tests.bench.upstream import die_with_parent


class Kind:
    def __init__(self, spec: dict[str, Any]) -> None:
        self.name = spec["name"]
        self.weight = float(spec["weight"])
        self.request = spec["request"].encode("latin-1")
        self.stream = bool(spec.get("stream"))
        self.hangup = bool(spec.get("hangup"))
        self.expect = set(spec["expect"])
        self.sent = 0
        self.by_status: Counter[str] = Counter()
        self.unexpected = 0
        self.samples: list[str] = []
        self.latencies: list[float] = []
        self.failures = 0

    def bad(self, what: str) -> None:
        self.unexpected += 1
        if len(self.samples) < 5:
            self.samples.append(what[:300])

    def report(self) -> dict[str, Any]:
        return {"sent": self.sent, "by_status": dict(self.by_status),
                "unexpected": self.unexpected, "unexpected_samples": self.samples,
                "failures": self.failures,
                "p50_ms": round(percentile(self.latencies, 0.5) * 1000, 2),
                "p99_ms": round(percentile(self.latencies, 0.99) * 1000, 2),
                "max_ms": round(max(self.latencies, default=0.0) * 1000, 2)}


def _one(conn: HttpConn, kind: Kind) -> None:
    t0 = time.perf_counter()
    kind.sent += 1
    try:
        conn.send(kind.request)
        status, headers = conn.read_head()
        kind.by_status[str(status)] += 1
        if kind.hangup and status == 200:
            next(iter(conn.iter_body(headers)), None)
            conn.close()   # the client leaves mid-stream
            kind.latencies.append(time.perf_counter() - t0)
            return
        body = b"".join(conn.iter_body(headers))
        conn.finish(headers)
    except (OSError, ValueError, StopIteration) as exc:
        kind.failures += 1
        kind.bad(f"{type(exc).__name__}: {exc}")
        conn.close()
        return
    kind.latencies.append(time.perf_counter() - t0)
    if status not in kind.expect:
        kind.bad(f"HTTP {status}: {body[-200:].decode(errors='replace')}")
    elif kind.stream and status == 200 and DONE_MARK not in body[-64:]:
        kind.bad("stream ended without [DONE]")


def run(config: dict[str, Any]) -> dict[str, Any]:
    import gevent
    from gevent import socket as gsocket

    addr = (config["addr"][0], int(config["addr"][1]))
    kinds = [Kind(k) for k in config["kinds"]]
    weights = [k.weight for k in kinds]
    rate = float(config["rate"])
    rng = random.Random(11)
    began = time.monotonic()
    stop_at = began + float(config["seconds"])
    schedule = {"next": began}

    def worker() -> None:
        conn = HttpConn(addr, gsocket.create_connection)
        try:
            while True:
                start = schedule["next"]
                schedule["next"] = max(start, time.monotonic() - 1.0) + rng.expovariate(rate)
                if start >= stop_at:
                    return
                gevent.sleep(max(0.0, start - time.monotonic()))
                _one(conn, rng.choices(kinds, weights)[0])
        finally:
            conn.close()

    greenlets = [gevent.spawn(worker) for _ in range(int(config["workers"]))]
    gevent.joinall(greenlets, timeout=float(config["seconds"]) + 120)
    gevent.killall([g for g in greenlets if not g.dead], timeout=5)
    return {"seconds": round(time.monotonic() - began, 1), "sent": sum(k.sent for k in kinds),
            "kinds": {k.name: k.report() for k in kinds}}


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m tests.bench.traffic CONFIG OUT", file=sys.stderr)
        return 2
    die_with_parent()
    config = json.loads(Path(args[0]).read_text())
    Path(args[1]).write_text(json.dumps(run(config), indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
