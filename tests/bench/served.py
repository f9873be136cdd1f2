"""`tokmodel serve` with gunicorn settings its command line does not (yet) expose.

Contract
--------
- `adjust_arbiter(change)`: before `tokmodel serve` builds its arbiter, arrange that
  `change(app)` runs on the gunicorn application just before the arbiter is set up (after
  serve has applied its own settings, before any worker is forked); `app.cfg.set(name,
  value)` there changes a setting for the master and every worker.
- `python -m tests.bench.served --worker-connections N -- SERVE_ARGS...` runs
  `tokmodel serve SERVE_ARGS` (runtime.cli, the same code path as the command) with
  gunicorn's worker_connections set to N, and prints `served gunicorn settings: {json}` on
  stderr. The bench uses it only when `tokmodel serve --help` offers no
  `--worker-connections` of its own.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any

SETTINGS_MARK = "served gunicorn settings: "


def adjust_arbiter(change: Callable[[Any], None]) -> None:
    from gunicorn.arbiter import Arbiter

    original_setup = Arbiter.setup

    def setup(arbiter: Arbiter, app: Any) -> None:
        change(app)
        original_setup(arbiter, app)

    Arbiter.setup = setup


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.served", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--worker-connections", type=int, required=True)
    parser.add_argument("serve_args", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    serve_args = [a for a in args.serve_args if a != "--"]

    def change(app: Any) -> None:
        app.cfg.set("worker_connections", args.worker_connections)
        print(SETTINGS_MARK + json.dumps({"worker_connections": app.cfg.worker_connections}),
              file=sys.stderr, flush=True)

    adjust_arbiter(change)
    from runtime.cli import main as tokmodel

    return tokmodel(["serve", *serve_args]) or 0


if __name__ == "__main__":
    raise SystemExit(main())
