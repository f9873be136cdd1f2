"""`tokmodel serve`: the gateway under gunicorn, with metrics summed over its workers and a
graceful shutdown that settles every request it ends.

Contract
--------
`serve(host, port, workers, worker_class, connections, shutdown_timeout)` runs gunicorn in
the foreground until it is stopped.

- Worker class: gevent (measured in `make bench`): synchronous code with cooperative I/O, so
  one worker holds hundreds to thousands of open streams while a sync or gthread worker would
  hold one per thread. ``gevent`` means `GracefulGeventWorker` below.
- Metrics: before gunicorn starts (so before any worker is forked or the app is loaded)
  PROMETHEUS_MULTIPROC_DIR is set to a fresh temporary directory, removed again when the
  server exits. An operator who sets the variable keeps the directory: its ``*.db`` files
  are deleted at start (one directory per server). gunicorn's ``child_exit`` hook calls
  ``mark_process_dead`` so the live gauges stop counting a worker that is gone.
- Holds: each worker starts a `HoldKeeper` (runtime/billing/sweeper.py) from gunicorn's
  ``post_worker_init`` hook, on the store its app serves from: heartbeats for the worker's
  own holds, and the sweep that settles the holds of lost workers.
- Settlements: each worker writes them behind the answers (runtime/billing/
  settle_behind.py) and waits for the writes in flight before it exits, within the
  graceful deadline (an immediate stop: SETTLE_WAIT seconds).
- SIGTERM: graceful stop within ``shutdown_timeout`` seconds (gunicorn's graceful_timeout,
  default 30, TOKMODEL_SHUTDOWN_TIMEOUT, ``--shutdown-timeout``; rounded up to whole seconds,
  which is what gunicorn takes). SIGINT and SIGQUIT stay gunicorn's immediate stop (open
  streams are cut without settling; their holds are settled by the sweeper of a worker that
  runs later: runtime/billing/sweeper.py).

What gunicorn 27 does on SIGTERM (arbiter.py, workers/base.py, workers/ggevent.py)
-------------------------------------------------------------------------------------
- The master (``handle_term`` -> ``halt`` -> ``stop(graceful=True)``) closes its copies of
  the listening sockets, sends SIGTERM to every worker, waits until ``graceful_timeout``
  seconds after that moment, then SIGKILLs the workers that are left.
- A worker's SIGTERM handler only sets ``alive = False``. The stock gevent worker notices it
  in a loop that sleeps 1 s, then closes its listening socket (``StreamServer.close``): once
  every process has closed it, new connections are refused. Requests in flight go on; a
  request that ends while the worker drains keeps its connection open (only requests that
  *start* after the signal get ``Connection: close``). It polls every 1 s until its pool is
  empty or ``graceful_timeout`` has passed since *it* noticed the signal, then
  ``server.stop(timeout=1)`` kills the remaining greenlets with GreenletExit.
- GreenletExit is raised where the greenlet waits (reading the upstream or writing to the
  client) and unwinds through the response body: ``AsyncWorker.handle_request`` calls the
  body's ``close()`` in a ``finally``, and a generator body's own ``finally`` runs, so a
  killed stream would be settled (status 499) -- if there were time for it.
- There is not: the worker's deadline starts up to a second after the master's and then
  allows one more second for the kill, so at the deadline the master's SIGKILL arrives
  before or during the kill and no ``close()``/``finally`` runs: the hold stays outstanding
  and the request is never logged. And idle keep-alive connections (every SDK keeps some)
  count as busy, so with any client connected the stock worker always waits the whole
  timeout.

The same holds for SIGHUP: the master starts new workers and sends the old ones SIGTERM.
And gunicorn's ``AsyncWorker.handle`` answers any BaseException with a 500, so the stock
worker's kill (or ours at the deadline, at once when the timeout is 0) sent an unsolicited
500 to every idle keep-alive connection.

`GracefulGeventWorker` fixes these: it closes its listener within 0.2 s of SIGTERM, closes
idle keep-alive connections at once (as nginx does on a graceful stop) and each connection
right after the response that was in flight on it, closes a connection it kills without a
word (no 500), exits as soon as nothing is open, and
measures its deadline from the signal: at ``shutdown_timeout - settle margin`` (margin
``min(3 s, shutdown_timeout / 4)``) it kills the requests still running with GreenletExit
and waits for their ``close()``/``finally`` (the settlement) until just before the master's
SIGKILL. The client of a killed stream sees the connection close mid-stream, never a
well-formed end it did not get. An idle connection whose client is sending a request at
the very moment it is closed loses that request (the usual keep-alive race; HTTP clients
retry requests that got no answer on a reused connection).
"""

from __future__ import annotations

import gc
import glob
import math
import os
import shutil
import socket
import tempfile
import time
from functools import partial
from typing import Any

import gevent
from gevent.pool import Pool
from gevent.server import StreamServer
from gunicorn.app.base import BaseApplication
from gunicorn.sock import ssl_context
from gunicorn.workers.ggevent import GeventWorker

from runtime import coalesced_response
from runtime.billing import settle_behind

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
WORKER_CLASSES = {"gevent": "runtime.serve.GracefulGeventWorker"}

_TICK = 0.2  # seconds between two looks at `alive` / the open connections
SETTLE_WAIT = 2.0  # an immediate stop's wait for the settlement writes in flight


def settle_margin(shutdown_timeout: float) -> float:
    """How long before the master's SIGKILL the worker ends the requests still running, so
    that their bodies' close() can settle them."""
    return min(3.0, shutdown_timeout / 4)


class _Conn:
    __slots__ = ("sock", "busy", "closed")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.busy = False  # a request is being answered (else: waiting for the next one)
        self.closed = False


class GracefulGeventWorker(GeventWorker):
    """gunicorn's gevent worker whose graceful stop ends in time to settle what it cuts."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        coalesced_response.install()
        self._conns: dict[Any, _Conn] = {}  # handler greenlet -> its connection
        self._term_at: float | None = None

    def load_wsgi(self) -> None:
        super().load_wsgi()
        # Everything loaded so far (the app, its catalogue, the generated models: ~80,000
        # objects) lives as long as the worker. Left in the collector's oldest generation, each
        # full collection walks it all: a 20-70 ms pause of every request of the worker, at
        # intervals that follow the request rate (measured). Frozen, a full collection only
        # walks what requests allocate.
        gc.collect()
        gc.freeze()
        settle_behind.enable()

    def handle_exit(self, sig: int, frame: Any) -> None:
        # the master's deadline starts when it sends this signal: measure ours from here
        if self._term_at is None:
            self._term_at = time.monotonic()
        super().handle_exit(sig, frame)

    def handle(self, listener: Any, client: Any, addr: Any) -> None:
        me = gevent.getcurrent()
        self._conns[me] = _Conn(client)
        try:
            super().handle(listener, client, addr)
        finally:
            self._conns.pop(me, None)

    def handle_request(self, listener_name: Any, req: Any, sock: Any, addr: Any) -> Any:
        conn = self._conns.get(gevent.getcurrent())
        if conn is not None:
            conn.busy = True
        try:
            result = super().handle_request(listener_name, req, sock, addr)
        finally:
            if conn is not None:
                conn.busy = False
        if not self.alive:
            # draining: do not wait on this keep-alive connection for a next request;
            # AsyncWorker.handle treats StopIteration as "close the connection"
            raise StopIteration
        return result

    def handle_error(self, req: Any, client: Any, addr: Any, exc: BaseException) -> None:
        # gunicorn's AsyncWorker.handle answers every BaseException with a 500, including
        # the GreenletExit this worker raises in the connections still open at its deadline
        # (with a shutdown or reload timeout of 0: every idle keep-alive connection). Such a
        # connection gets no answer it did not ask for: it is just closed (by the caller).
        if isinstance(exc, gevent.GreenletExit):
            self.log.debug("Closing a connection ended by the worker's stop")
            return
        super().handle_error(req, client, addr, exc)

    def run(self) -> None:
        # gunicorn's GeventWorker.run (StreamServer flavour), with our own drain below
        ssl_args = {"ssl_context": ssl_context(self.cfg)} if self.cfg.is_ssl else {}
        servers = []
        for s in self.sockets:
            s.setblocking(1)
            server = StreamServer(s, handle=partial(self.handle, s),
                                  spawn=Pool(self.worker_connections), **ssl_args)
            if self.cfg.workers > 1:
                server.max_accept = 1
            server.start()
            servers.append(server)
        try:
            last_notify = 0.0
            while self.alive:
                now = time.monotonic()
                if now - last_notify >= 1.0:
                    self.notify()
                    last_notify = now
                gevent.sleep(_TICK)
            self._drain(servers)
        finally:
            # settlement writes still behind their answers (also on an immediate stop)
            self._finish_settlements()

    def _finish_settlements(self) -> None:
        graceful = max(0.0, float(self.cfg.graceful_timeout))
        if self._term_at is not None:
            limit = self._term_at + graceful - min(0.25, settle_margin(graceful) / 4)
        else:
            limit = time.monotonic() + SETTLE_WAIT
        if not settle_behind.wait(max(0.05, limit - time.monotonic())):
            self.log.warning("Exiting with %d settlement(s) unwritten: their holds are left "
                             "to the sweeper (pid:%s)", settle_behind.pending(), self.pid)

    def _drain(self, servers: list[StreamServer]) -> None:
        for server in servers:
            server.close()  # our copy of the listening socket: new connections are refused
        graceful = max(0.0, float(self.cfg.graceful_timeout))
        start = self._term_at if self._term_at is not None else time.monotonic()
        kill_at = start + graceful - settle_margin(graceful)
        pools = [server.pool for server in servers]
        while any(pool.greenlets for pool in pools) and time.monotonic() < kill_at:
            self._close_idle()
            self.notify()
            gevent.sleep(_TICK)
        if not any(pool.greenlets for pool in pools):
            return
        running = sum(len(pool.greenlets) for pool in pools)
        self.log.warning("Shutdown timeout: ending %d open connection(s) (pid:%s)",
                         running, self.pid)
        for pool in pools:
            pool.kill(block=False)
        # leave a little of the margin for the process to exit before the master's SIGKILL
        settle_until = start + graceful - min(0.25, settle_margin(graceful) / 4)
        for pool in pools:
            pool.join(timeout=max(0.05, settle_until - time.monotonic()))

    def _close_idle(self) -> None:
        for conn in list(self._conns.values()):
            if not conn.busy and not conn.closed:
                conn.closed = True
                # The handler blocked reading the next request then reads EOF and closes the
                # connection quietly. Through a duplicate descriptor: gevent's own shutdown()
                # would cancel the handler's wait with an error that gunicorn logs as one.
                try:
                    with socket.fromfd(conn.sock.fileno(), conn.sock.family,
                                       conn.sock.type) as dup:
                        dup.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


class GatewayServer(BaseApplication):
    def __init__(self, options: dict[str, Any]) -> None:
        self.options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            if value is not None and key in self.cfg.settings:  # older gunicorns lack some
                self.cfg.set(key, value)

    def load(self):  # noqa: ANN201 - gunicorn's interface
        from runtime.admin.retention import RetentionPruner, RetentionSettings
        from runtime.admin.rollup import UsageRollup, rollup_interval
        from runtime.app import build_app
        from runtime.billing.sweeper import HoldKeeper, HoldSettings

        app, store = build_app()
        # started by _post_worker_init, in the worker, once its event loop runs
        self.hold_keeper = HoldKeeper(store, HoldSettings.from_env())
        self.pruner = RetentionPruner(store, RetentionSettings.from_env())
        self.rollup = UsageRollup(store, rollup_interval())
        return app


def prepare_metrics_dir() -> tuple[str, bool]:
    """Point PROMETHEUS_MULTIPROC_DIR at an empty directory: (path, created here)."""
    configured = os.environ.get(MULTIPROC_ENV)
    if configured:
        os.makedirs(configured, exist_ok=True)
        # only prometheus_client's own files: a mistaken path loses nothing else
        for path in glob.glob(os.path.join(configured, "*.db")):
            os.remove(path)
        return configured, False
    path = tempfile.mkdtemp(prefix="tokmodel-metrics-")
    os.environ[MULTIPROC_ENV] = path
    return path, True


def _child_exit(server: Any, worker: Any) -> None:
    # imported here, in the master, after PROMETHEUS_MULTIPROC_DIR is set
    from prometheus_client.multiprocess import mark_process_dead

    mark_process_dead(worker.pid, os.environ.get(MULTIPROC_ENV))


def _post_worker_init(worker: Any) -> None:
    # each worker keeps its own holds alive and settles those of lost workers
    # (runtime/billing/sweeper.py)
    keeper = getattr(worker.app, "hold_keeper", None)
    if keeper is not None:
        keeper.start()
    # usage and audit-log retention (runtime/admin/retention.py)
    pruner = getattr(worker.app, "pruner", None)
    if pruner is not None:
        pruner.start()
    # the daily sums the usage reports read (runtime/admin/rollup.py)
    rollup = getattr(worker.app, "rollup", None)
    if rollup is not None:
        rollup.start()


def serve(host: str, port: int, workers: int, worker_class: str = "gevent",
          connections: int = 2000, shutdown_timeout: float = 30.0) -> None:
    """Serve the gateway until stopped (SIGTERM: graceful within `shutdown_timeout`)."""
    metrics_dir, created = prepare_metrics_dir()
    master = os.getpid()
    try:
        GatewayServer({
            "bind": f"{host}:{port}",
            "workers": workers,
            "worker_class": WORKER_CLASSES.get(worker_class, worker_class),
            "worker_connections": connections,
            "keepalive": 75,
            # streams may stay open for minutes; a worker busy with them is not stuck
            "timeout": 0 if worker_class == "gevent" else 120,
            # gunicorn takes whole seconds
            "graceful_timeout": max(0, math.ceil(shutdown_timeout)),
            "child_exit": _child_exit,
            "post_worker_init": _post_worker_init,
            "accesslog": None,
            "errorlog": "-",
            "loglevel": "info",
            "proc_name": "tokmodel",
            # one fixed control-socket path per user would be shared by every gateway on a host
            "control_socket_disable": True,
        }).run()
    finally:
        # workers are forked inside run() and unwind through here too when they exit
        if created and os.getpid() == master:
            shutil.rmtree(metrics_dir, ignore_errors=True)
