"""`tokmodel serve`: the gateway under gunicorn.

The worker class is gevent (measured in `make bench`): synchronous code with cooperative
I/O, so one worker holds hundreds to thousands of open streams while a sync or gthread
worker would hold one per thread.
"""

from __future__ import annotations

from typing import Any

from gunicorn.app.base import BaseApplication


class GatewayServer(BaseApplication):
    def __init__(self, options: dict[str, Any]) -> None:
        self.options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            if value is not None and key in self.cfg.settings:  # older gunicorns lack some
                self.cfg.set(key, value)

    def load(self):  # noqa: ANN201 - gunicorn's interface
        from runtime.app import get_app

        return get_app()


def serve(host: str, port: int, workers: int, worker_class: str = "gevent",
          connections: int = 2000) -> None:
    GatewayServer({
        "bind": f"{host}:{port}",
        "workers": workers,
        "worker_class": worker_class,
        "worker_connections": connections,
        "keepalive": 75,
        # streams may stay open for minutes; a worker busy with them is not stuck
        "timeout": 0 if worker_class == "gevent" else 120,
        "graceful_timeout": 30,
        "accesslog": None,
        "errorlog": "-",
        "loglevel": "info",
        "proc_name": "tokmodel",
        # one fixed control-socket path per user would be shared by every gateway on a host
        "control_socket_disable": True,
    }).run()
