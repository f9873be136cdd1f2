"""Measurement hooks for the gateway's processes, loaded at interpreter start by every Python
process whose PYTHONPATH starts with this directory (the bench's `--probe`); never imported
by the gateway itself.

Contract (environment variables, all optional; without BENCH_PROBE_DIR nothing is recorded):
- BENCH_PROBE_DIR: each process appends one JSON line per garbage-collection pause longer
  than BENCH_PROBE_GC_MS (default 2) to `<dir>/gc-<pid>.jsonl`:
  {"pid", "t" (epoch seconds at the start), "ms", "generation", "collected"}; a forked child
  writes to its own file.
- BENCH_GC_THRESHOLD="a,b,c": gc.set_threshold(a, b, c) at start (an experiment).
- BENCH_GC_FREEZE=S: S seconds after each fork (a gunicorn worker has loaded the app by
  then), import the modules named in BENCH_PREIMPORT (comma-separated; a name ending in
  ".*" imports every module of that package), then gc.collect() and gc.freeze() in that
  process (an experiment: what a warmed-up worker holds is never traversed again).
- gevent's blocking monitor, when its environment variables switch it on
  (GEVENT_MONITOR_THREAD_ENABLE, GEVENT_MAX_BLOCKING_TIME; the bench also sets
  GEVENT_PRINT_BLOCKING_REPORTS=false): each report (the event loop ran no other greenlet
  for that long) is appended to `<dir>/hub-<pid>.jsonl` as {"pid", "t", "greenlet",
  "stack": the blocked greenlet's frames, outermost first, as "path:line function"}.
"""

from __future__ import annotations

import gc
import json
import os
import threading
import time

_DIR = os.environ.get("BENCH_PROBE_DIR")
_MIN_MS = float(os.environ.get("BENCH_PROBE_GC_MS") or 2.0)
_state: dict = {"start": 0.0, "wall": 0.0, "cpu": 0.0}
_files: dict = {}
_sleep = time.sleep   # the real one, also after gevent patches the worker


def _out(kind: str) -> object:
    pid = os.getpid()
    key = (kind, pid)
    if key not in _files:
        _files[key] = open(  # noqa: SIM115 - kept open for the life of the process
            os.path.join(_DIR, f"{kind}-{pid}.jsonl"), "a", buffering=1)
    return _files[key]


def _on_gc(phase: str, info: dict) -> None:
    if phase == "start":
        _state["start"], _state["wall"] = time.perf_counter(), time.time()
        _state["cpu"] = time.thread_time()
        return
    ms = (time.perf_counter() - _state["start"]) * 1000
    if ms < _MIN_MS:
        return
    cpu_ms = (time.thread_time() - _state["cpu"]) * 1000
    _out("gc").write(json.dumps({"pid": os.getpid(), "t": round(_state["wall"], 4),
                                 "ms": round(ms, 2), "cpu_ms": round(cpu_ms, 2),
                                 "generation": info.get("generation"),
                                 "collected": info.get("collected")}) + "\n")


def _on_event(event: object) -> None:
    if type(event).__name__ != "EventLoopBlocked":
        return
    lines = "\n".join(str(x) for x in (getattr(event, "info", ()) or ())).splitlines()
    stack, inside = [], False
    for line in lines:
        if line.startswith("Blocked Stack"):
            inside = True
        elif inside and line.startswith("Info"):
            break
        elif inside and line.startswith('  File "'):
            # '  File "/path/x.py", line 12, in func'
            path, _, rest = line[len('  File "'):].partition('", line ')
            number, _, func = rest.partition(", in ")
            stack.append(f"{path}:{number} {func}")
    _out("hub").write(json.dumps({"pid": os.getpid(), "t": round(time.time(), 3),
                                  "greenlet": str(getattr(event, "greenlet", ""))[:160],
                                  "stack": stack}) + "\n")


def _preimport(names: str) -> None:
    import importlib
    import pkgutil

    for name in filter(None, (n.strip() for n in names.split(","))):
        if name.endswith(".*"):
            package = importlib.import_module(name[:-2])
            for module in pkgutil.iter_modules(package.__path__):
                importlib.import_module(f"{name[:-2]}.{module.name}")
        else:
            importlib.import_module(name)


def _freeze_later(seconds: float) -> None:
    def run() -> None:
        _sleep(seconds)
        _preimport(os.environ.get("BENCH_PREIMPORT", ""))
        gc.collect()
        gc.freeze()

    # a native thread, started before gevent patches the worker: time.sleep really sleeps
    threading.Thread(target=run, daemon=True).start()


if os.environ.get("BENCH_GC_THRESHOLD"):
    gc.set_threshold(*(int(x) for x in os.environ["BENCH_GC_THRESHOLD"].split(",")))
if _DIR:
    gc.callbacks.append(_on_gc)
    if os.environ.get("GEVENT_MONITOR_THREAD_ENABLE"):
        try:
            import zope.event

            zope.event.subscribers.append(_on_event)
        except ImportError:
            pass
if os.environ.get("BENCH_GC_FREEZE"):
    _delay = float(os.environ["BENCH_GC_FREEZE"])
    os.register_at_fork(after_in_child=lambda: _freeze_later(_delay))
