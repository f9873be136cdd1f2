"""Work that waits until the answer has left the server.

Contract
--------
- `AfterAnswer(app)` wraps the WSGI application the server calls. Functions given to
  `defer(environ, fn)` while the application handles a request run once the server has sent
  the answer: when it closes the response iterable, which PEP 3333 servers (gunicorn among
  them) do after the last byte, and also when sending failed. They run in the order given,
  before the application's own close() (which may read away an unread request body for
  seconds: runtime/client_body.py); one that raises is logged and the rest still run.
- Without `AfterAnswer` around the application (an app built by `create_app` and called
  directly), `defer` runs `fn` at once.

Why: at concurrency 1 a request's answer waits for all the work done before it is sent. The
access-log line and the request metrics describe an answer already decided; writing them
after it has left takes them off the client's wait.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from typing import Any

ENVIRON_KEY = "tokmodel.after_answer"

log = logging.getLogger("tokmodel.server")


def defer(environ: dict[str, Any], fn: Callable[[], None]) -> None:
    """Run `fn` after the answer to this request has been sent (at once without a wrapper)."""
    pending = environ.get(ENVIRON_KEY)
    if pending is None:
        fn()
    else:
        pending.append(fn)


class RunAfter:
    """The response body; its close() runs `then`'s functions, then closes the body."""

    __slots__ = ("_result", "_then")

    def __init__(self, result: Iterable[bytes], then: list[Callable[[], None]]) -> None:
        self._result = result
        self._then = then

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._result)

    def close(self) -> None:
        try:
            _run(self._then)
        finally:
            close = getattr(self._result, "close", None)
            if close is not None:
                close()


def _run(functions: list[Callable[[], None]]) -> None:
    for fn in functions:
        try:
            fn()
        except Exception:
            log.exception("work after an answer failed")


class AfterAnswer:
    def __init__(self, app: Callable[..., Any]) -> None:
        self.app = app

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        pending: list[Callable[[], None]] = []
        environ[ENVIRON_KEY] = pending
        try:
            result = self.app(environ, start_response)
        except BaseException:
            _run(pending)
            raise
        if not pending:
            return result
        wrapper = environ.get("wsgi.file_wrapper")
        if wrapper is not None and isinstance(result, wrapper):
            _run(pending)   # keep the server's sendfile path; such answers are rare
            return result
        return RunAfter(result, pending)
