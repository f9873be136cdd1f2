"""GET /healthz (the process answers), GET /readyz (database reachable, catalogue loaded) and
GET or HEAD / (what clients such as Claude Code probe before their first request); none needs
a key."""

from __future__ import annotations

import falcon

from runtime.gateway import Gateway


class Health:
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = {"status": "ok"}


class Root:
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = {"name": "TokModel", "status": "ok", "api": "/v1"}

    def on_head(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.content_type = falcon.MEDIA_JSON


class Ready:
    def __init__(self, gateway: Gateway) -> None:
        self.gw = gateway

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        try:
            database = self.gw.store.ping()
        except Exception:
            database = False
        models = len(self.gw.catalogue.usable_models())
        ready = database and bool(self.gw.catalogue.models)
        resp.status = falcon.HTTP_200 if ready else falcon.HTTP_503
        resp.media = {"status": "ready" if ready else "not ready", "database": database,
                      "models": models}
