"""GET /metrics: the Prometheus exposition, summed over every gunicorn worker.

Open when no token is configured; with TOKMODEL_METRICS_TOKEN set it needs
``Authorization: Bearer <token>`` (compared in constant time) and answers 401 otherwise.
Which worker answers does not matter: the values come from all workers' metric files.
"""

from __future__ import annotations

import hmac

import falcon

from runtime.observability.metrics import metrics_text


class MetricsEndpoint:
    def __init__(self, token: str | None) -> None:
        self._expected = f"Bearer {token}".encode() if token else None

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        if self._expected is not None:
            given = (req.get_header("Authorization") or "").encode("utf-8", "surrogateescape")
            if not hmac.compare_digest(given, self._expected):
                resp.status = falcon.HTTP_401
                resp.content_type = falcon.MEDIA_TEXT
                resp.set_header("WWW-Authenticate", 'Bearer realm="metrics"')
                resp.text = "401 Unauthorized: GET /metrics needs the metrics bearer token\n"
                return
        body, content_type = metrics_text()
        resp.content_type = content_type
        resp.data = body
