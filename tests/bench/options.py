"""What one bench run does: the parts and their sizes (`Options`), and the three presets.

Contract
--------
- `PARTS`: every part, in the order a run performs them. `DEFAULT_PARTS` (`make bench`)
  leaves out the soak; `--full` (`make bench-full`) runs them all.
- `Options()` is the default run (`make bench`, a few minutes); `quick(opts)` shrinks every
  part to a few seconds (a sanity run); `full(opts)` is the issue's full-length measurement:
  60 s tails on 1,000,000 usage rows (and PostgreSQL when a URL is given), 5,000 slow
  streams on one worker, a 10-minute soak. Each returns a new Options; parts are chosen
  separately (`--parts`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

PARTS = ("latency", "throughput", "stream-rate", "streams", "databases", "tails", "soak",
         "hot")
DEFAULT_PARTS = ("latency", "throughput", "stream-rate", "streams", "databases", "tails",
                 "hot")


@dataclass(frozen=True)
class Options:
    # latency at concurrency 1 and non-streamed throughput
    requests: int = 2000
    warmup: int = 200
    duration: float = 10.0
    concurrency: int = 64
    workers: int = 2
    rounds: int = 5                      # a round of one side moves by up to 0.2x here
    upstream_workers: int = 1
    # stream-rate: 20-chunk streams from a fast upstream at `concurrency`, interleaved rounds
    stream_chunks: int = 20
    stream_rate_duration: float = 6.0
    # streams: slow concurrent streams held by one worker
    streams: int = 1000
    stream_seconds: int = 15
    stream_interval: float = 1.0
    worker_connections: int = 0          # 0: the gateway's own default
    # tails: concurrency 1, alternating streamed and non-streamed requests
    tails_seconds: float = 10.0
    tails_warmup: float = 3.0
    tails_rows: int = 100_000
    tails_backlog: bool = False          # leave the filled rows for the gateway's paced fold
    postgres: str = ""                   # a PostgreSQL URL: tails and databases on it
    baseline: str = ""                   # another checkout: its gateway is one more side
    # the bare passthrough of ../shared/bench as its own docstring serves it (stock gevent
    # worker): one more side of latency and throughput; "" for none
    reference: str = ""
    # databases: PostgreSQL against SQLite at concurrency 1, `rounds` interleaved rounds
    db_ratio_seconds: float = 10.0
    # soak: mixed traffic
    soak_seconds: float = 60.0
    soak_rate: float = 60.0              # background requests per second (about)
    soak_sample_seconds: float = 2.0
    # diagnosis
    probe_hub: float = 0.0               # >0: gevent's blocking monitor at that many seconds
    gateway_env: tuple[tuple[str, str], ...] = ()
    hot_iterations: int = 2000
    parts: tuple[str, ...] = field(default=DEFAULT_PARTS)


def quick(opts: Options) -> Options:
    return replace(opts, requests=300, warmup=50, duration=2.0, streams=100, stream_seconds=3,
                   hot_iterations=300, stream_rate_duration=2.0, tails_seconds=3.0,
                   tails_warmup=1.0, tails_rows=20_000, soak_seconds=20.0,
                   db_ratio_seconds=2.0,
                   soak_sample_seconds=1.0)


def full(opts: Options) -> Options:
    return replace(opts, streams=5000, stream_seconds=60, worker_connections=6000,
                   tails_seconds=60.0, tails_warmup=5.0, tails_rows=1_000_000,
                   soak_seconds=600.0, soak_sample_seconds=5.0, parts=PARTS)
