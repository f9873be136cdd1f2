"""The Falcon WSGI application.

`create_app(settings, registry, store, upstream)` is pure: it wires one resource per
endpoint kind, in a loop over the generated registry, and one error handler that answers
every failure in the client's dialect. `get_app()` builds everything from the environment;
gunicorn serves `runtime.app:get_app()`.
"""

from __future__ import annotations

import importlib
import logging
from types import ModuleType
from typing import Any

import falcon

from runtime.admin import add_governance_routes
from runtime.after_answer import AfterAnswer
from runtime.catalogue import Catalogue, load_catalogue
from runtime.client_body import BodyGuard
from runtime.console import add_console_routes
from runtime.errors import OPENAI, GatewayError, render_error
from runtime.gateway import Gateway
from runtime.observability.middleware import RequestRecords
from runtime.pipeline.run import Pipeline
from runtime.redaction import register_secrets
from runtime.resources import RESOURCES, ROUTES, PricedResource
from runtime.resources.health import Health, Ready, Root
from runtime.resources.metrics_endpoint import MetricsEndpoint
from runtime.settings import Settings
from runtime.store import Store, open_store
from runtime.upstream import Upstream
from runtime.validation import Validator

log = logging.getLogger("tokmodel")

_FALCON_TYPES = {404: "not_found_error", 405: "invalid_request_error",
                 413: "invalid_request_error", 415: "invalid_request_error"}


def _send(resp: falcon.Response, err: GatewayError, dialect: str) -> None:
    resp.status = err.status
    resp.content_type = falcon.MEDIA_JSON
    resp.data = render_error(err, dialect)
    for name, value in err.headers.items():
        resp.set_header(name, value)
    if err.retryable is False:
        resp.set_header("x-should-retry", "false")


def _dialect(req: falcon.Request) -> str:
    return getattr(req.context, "dialect", OPENAI)


def _on_gateway_error(req: falcon.Request, resp: falcon.Response, ex: GatewayError,
                      params: dict[str, Any]) -> None:
    _send(resp, ex, _dialect(req))


def _on_http_error(req: falcon.Request, resp: falcon.Response, ex: falcon.HTTPError,
                   params: dict[str, Any]) -> None:
    status = ex.status_code
    if status == 404:
        message = f"Unknown path {req.path}. See GET /v1/models and the endpoint list."
    elif status == 405:
        message = f"Method {req.method} is not allowed on {req.path}."
    else:
        message = ex.description or ex.title or "Request failed."
    err = GatewayError(message, status=status,
                       type=_FALCON_TYPES.get(status, "invalid_request_error"))
    _send(resp, err, _dialect(req))
    for name, value in (ex.headers or {}).items():
        resp.set_header(name, value)


def _on_unexpected(req: falcon.Request, resp: falcon.Response, ex: Exception,
                   params: dict[str, Any]) -> None:
    log.exception("unhandled error on %s %s", req.method, req.path)
    _send(resp, GatewayError("The gateway failed to handle this request.", status=500),
          _dialect(req))


def create_app(settings: Settings, registry: ModuleType, store: Store, upstream: Upstream,
               catalogue: Catalogue) -> falcon.App:
    # an upstream error quoting the operator's own key is masked (runtime/redaction.py)
    register_secrets(deployment.api_key for provider in catalogue.providers.values()
                     for deployment in provider.deployments)
    gateway = Gateway(settings=settings, catalogue=catalogue, store=store, upstream=upstream,
                      validator=Validator(registry.MODEL_MODULES),
                      endpoints=registry.ENDPOINTS)
    pipeline = Pipeline(gateway)
    app = falcon.App(media_type=falcon.MEDIA_JSON, middleware=[RequestRecords()])
    app.req_options.strip_url_path_trailing_slash = True
    for kind, endpoint in registry.ENDPOINTS.items():
        if kind in ROUTES:
            resource: object = PricedResource(pipeline, ROUTES[kind])
        elif kind in RESOURCES:
            resource = RESOURCES[kind](gateway)
        else:
            raise RuntimeError(f"specs/endpoints.yaml declares '{kind}', which no resource "
                               "serves (runtime/resources/__init__.py)")
        for path in endpoint.routes:
            app.add_route(path, resource)
    app.add_route("/", Root())
    app.add_route("/healthz", Health())
    app.add_route("/readyz", Ready(gateway))
    app.add_route("/metrics", MetricsEndpoint(settings.metrics_token))
    add_console_routes(app, store, settings)
    add_governance_routes(app, gateway)
    app.add_error_handler(Exception, _on_unexpected)
    app.add_error_handler(falcon.HTTPError, _on_http_error)
    app.add_error_handler(GatewayError, _on_gateway_error)
    return app


def get_app() -> AfterAnswer:
    """The app for this process, configured from the environment."""
    return build_app()[0]


def build_app() -> tuple[AfterAnswer, Store]:
    """`get_app()` and the store it serves from (whose holds the worker keeps alive): the app
    with the idle timeout on request bodies and the disposal of unread ones
    (runtime/client_body.py), and with the work deferred until each answer has been sent
    (runtime/after_answer.py)."""
    from generated import registry

    settings = Settings.from_env()
    store = open_store(settings.database_url)
    app = create_app(settings, registry, store,
                     Upstream(max_answer_bytes=settings.max_upstream_answer_bytes),
                     load_catalogue(settings.providers_file, registry=registry))
    warm_up(registry)
    return AfterAnswer(BodyGuard(app, settings.body_idle_timeout, settings.max_body_bytes)), store


def warm_up(registry: ModuleType) -> None:
    """Import every format's generated request models now: validation imports them on first
    use, and pydantic builds them in 0.1-0.5 s per format (measured), a stall the first
    request of each format in each worker would otherwise wait for."""
    for module in registry.MODEL_MODULES.values():
        importlib.import_module(module)
