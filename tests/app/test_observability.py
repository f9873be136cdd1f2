"""Observability units: metrics summed over processes, the /metrics token, the access-log
line and the request-record middleware."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import time
from pathlib import Path

import falcon
import falcon.testing
import pytest

from runtime.after_answer import AfterAnswer
from runtime.billing.credits import format_credits
from runtime.observability import (
    RequestRecord,
    RequestRecords,
    access_log,
    metrics,
    metrics_text,
)
from runtime.observability.record import iso_utc
from runtime.resources.metrics_endpoint import MetricsEndpoint
from runtime.settings import Settings

ROOT = Path(__file__).resolve().parents[2]

LOG_FIELDS = ["time", "request_id", "client_request_id", "account", "key_id", "endpoint",
              "model", "provider", "deployment", "attempts", "status", "latency_ms", "ttfb_ms",
              "prompt_tokens", "completion_tokens", "cached_tokens", "cost", "stream"]


@pytest.fixture
def log_lines():
    """Capture the access log; restore the logger as it was afterwards."""
    handlers, enabled = access_log.logger.handlers[:], access_log._enabled
    stream = io.StringIO()
    access_log.configure(True, stream)
    yield lambda: [json.loads(line) for line in stream.getvalue().splitlines()]
    access_log.logger.handlers[:] = handlers
    access_log._enabled = enabled


def sample(name: str, labels: dict[str, str] | None = None) -> float:
    return metrics.REGISTRY.get_sample_value(name, labels or {}) or 0.0


# --- multiprocess aggregation -------------------------------------------------------------

_INCREMENT = """
import sys
from runtime.observability import metrics, record
assert metrics.multiprocess_dir()
for _ in range(int(sys.argv[1])):
    r = record.RequestRecord("req_x", None, "chat", 0.0, 0.0, model="openai/gpt-4o",
                             provider="openai", prompt_tokens=3, cost_nano=250_000)
    r.finish(200)
record.stream_opened()
record.attempt("openai", "default", "ok")
"""

_SCRAPE = """
import sys
from runtime.observability import metrics_text
body, content_type = metrics_text()
sys.stdout.write(content_type + "\\n" + body.decode())
"""


def _run(code: str, env_dir: Path, *args: str) -> str:
    env = {"PROMETHEUS_MULTIPROC_DIR": str(env_dir), "TOKMODEL_ACCESS_LOG": "0",
           "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


def _value(text: str, series: str) -> float:
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line.split()[-1])
    raise AssertionError(f"{series} not in:\n{text}")


def test_metrics_are_summed_over_processes(tmp_path):
    _run(_INCREMENT, tmp_path, "2")
    _run(_INCREMENT, tmp_path, "3")
    out = _run(_SCRAPE, tmp_path)
    content_type, text = out.split("\n", 1)
    assert content_type.startswith("text/plain")
    labels = 'endpoint="chat",model="openai/gpt-4o",provider="openai",status="200"'
    assert _value(text, f"tokmodel_requests_total{{{labels}}}") == 5
    assert _value(text, 'tokmodel_request_duration_seconds_count{endpoint="chat"}') == 5
    assert _value(text, 'tokmodel_tokens_total{kind="prompt",model="openai/gpt-4o"}') == 15
    assert _value(text, 'tokmodel_cost_credits_total{model="openai/gpt-4o"}') == \
        pytest.approx(5 * 0.00025)
    assert _value(text, 'tokmodel_upstream_attempts_total{deployment="default",'
                        'outcome="ok",provider="openai"}') == 2
    # a live-sum gauge: both writers have exited, but nobody marked them dead here
    assert _value(text, "tokmodel_open_streams") == 2


_FORKING = """
import os
from runtime.observability import metrics, metrics_text

def count(n):
    for _ in range(n):
        metrics.requests("chat", "openai/gpt-4o", "openai", "200").inc()

count(1)   # the parent (gunicorn's master, if it imported the metrics) counted first
children = []
for n in (2, 3):
    pid = os.fork()
    if pid == 0:
        count(n)
        os._exit(0)
    children.append(pid)
for pid in children:
    assert os.waitpid(pid, 0)[1] == 0
count(4)
print(sorted(f for f in os.listdir(metrics.multiprocess_dir()) if f.startswith("counter_")))
print(metrics_text()[0].decode())
"""


def test_forked_workers_count_in_files_of_their_own(tmp_path):
    """The process id the metric files are named by is read once and again after a fork:
    a worker forked from a process that counted writes its own file, and nothing is lost."""
    out = _run(_FORKING, tmp_path)
    files, text = out.split("\n", 1)
    assert files.count("counter_") == 3, files
    labels = 'endpoint="chat",model="openai/gpt-4o",provider="openai",status="200"'
    assert _value(text, f"tokmodel_requests_total{{{labels}}}") == 1 + 2 + 3 + 4


def test_in_process_registry_without_multiproc_dir():
    assert metrics.multiprocess_dir() is None
    body, content_type = metrics_text()
    assert content_type.startswith("text/plain")
    assert b"tokmodel_open_streams" in body


# --- GET /metrics ---------------------------------------------------------------------------

def _metrics_client(token: str | None) -> falcon.testing.TestClient:
    app = falcon.App()
    app.add_route("/metrics", MetricsEndpoint(token))
    return falcon.testing.TestClient(app)


def test_metrics_endpoint_open_without_token():
    resp = _metrics_client(None).simulate_get("/metrics")
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/plain")
    assert "tokmodel_open_streams" in resp.text


@pytest.mark.parametrize("header", [None, "Bearer wrong", "Bearer s3cret-token-x",
                                    "s3cret-token", "Basic s3cret-token", "Bearer  s3cret-token"])
def test_metrics_endpoint_token_refused(header):
    headers = {"Authorization": header} if header else {}
    resp = _metrics_client("s3cret-token").simulate_get("/metrics", headers=headers)
    assert resp.status_code == 401
    assert "tokmodel_" not in resp.text and "s3cret" not in resp.text


def test_metrics_endpoint_token_accepted():
    resp = _metrics_client("s3cret-token").simulate_get(
        "/metrics", headers={"Authorization": "Bearer s3cret-token"})
    assert resp.status_code == 200 and "tokmodel_requests_total" in resp.text


def test_settings_read_metrics_token_and_shutdown_timeout():
    settings = Settings.from_env({"TOKMODEL_METRICS_TOKEN": "m3trics-t0ken",
                                  "TOKMODEL_SHUTDOWN_TIMEOUT": "7.5"})
    assert settings.metrics_token == "m3trics-t0ken" and settings.shutdown_timeout == 7.5
    assert "m3trics-t0ken" not in repr(settings)
    assert Settings.from_env({}).metrics_token is None
    assert Settings.from_env({}).shutdown_timeout == 30


# --- RequestRecord --------------------------------------------------------------------------

def _record(**fields) -> RequestRecord:
    now = time.monotonic()
    return RequestRecord(request_id="req_0123", client_request_id="client-1", endpoint="chat",
                         started=now - 0.25, time=1767322000.5, **fields)


def test_finish_is_idempotent_and_logs_exact_fields(log_lines):
    labels = {"endpoint": "chat", "model": "openai/gpt-4o", "provider": "openai",
              "status": "200"}
    before = sample("tokmodel_requests_total", labels)
    tokens_before = sample("tokmodel_tokens_total", {"model": "openai/gpt-4o", "kind": "cached"})
    cost_before = sample("tokmodel_cost_credits_total", {"model": "openai/gpt-4o"})
    ttfb_before = sample("tokmodel_time_to_first_byte_seconds_count", {"endpoint": "chat"})
    record = _record(account_id=7, key_id="key_0123456789ab", model="openai/gpt-4o",
                     provider="openai", deployment="default", attempts=2, prompt_tokens=11,
                     completion_tokens=5, cached_tokens=4, cost_nano=1_500_000, stream=True)
    record.mark_first_byte()
    first = record.first_byte
    record.mark_first_byte()
    assert record.first_byte == first
    record.finish(200)
    record.finish(500)
    lines = log_lines()
    assert len(lines) == 1
    line = lines[0]
    assert list(line) == LOG_FIELDS
    assert line["time"] == "2026-01-02T02:46:40.500Z"
    assert line["request_id"] == "req_0123" and line["client_request_id"] == "client-1"
    assert line["account"] == 7 and line["key_id"] == "key_0123456789ab"
    assert (line["endpoint"], line["model"], line["provider"], line["deployment"]) == \
        ("chat", "openai/gpt-4o", "openai", "default")
    assert line["attempts"] == 2 and line["status"] == 200 and line["stream"] is True
    assert line["latency_ms"] >= 250 and 240 <= line["ttfb_ms"] <= line["latency_ms"]
    assert (line["prompt_tokens"], line["completion_tokens"], line["cached_tokens"]) == (11, 5, 4)
    assert line["cost"] == 0.0015
    assert record.status == 200 and record.finished
    assert sample("tokmodel_requests_total", labels) == before + 1
    assert sample("tokmodel_tokens_total", {"model": "openai/gpt-4o", "kind": "cached"}) == \
        tokens_before + 4
    assert sample("tokmodel_cost_credits_total", {"model": "openai/gpt-4o"}) == \
        pytest.approx(cost_before + 0.0015)
    assert sample("tokmodel_time_to_first_byte_seconds_count", {"endpoint": "chat"}) == \
        ttfb_before + 1


def test_log_line_has_cost_as_exact_decimal_and_no_secrets(log_lines):
    record = _record(model="openai/gpt-4o", cost_nano=1)
    record.finish(403)
    raw = record.log_line()
    assert '"cost":0.000000001,' in raw and "e-" not in raw
    line = log_lines()[0]
    assert line["ttfb_ms"] is None and line["stream"] is False and line["account"] is None
    assert not {"key", "secret", "authorization", "prompt", "messages"} & set(line)


def test_cost_and_time_format_of_log_lines():
    assert format_credits(0) == "0"
    assert format_credits(1) == "0.000000001"
    assert format_credits(80) == "0.00000008"
    assert format_credits(1_500_000_000) == "1.5"
    assert format_credits(123_456_789_012_345) == "123456.789012345"
    assert format_credits(-250_000) == "-0.00025"
    assert iso_utc(0) == "1970-01-01T00:00:00.000Z"
    assert iso_utc(0.999) == "1970-01-01T00:00:00.999Z"
    assert iso_utc(86461.25) == "1970-01-02T00:01:01.250Z"


def test_access_log_can_be_turned_off(log_lines):
    access_log.configure(False)
    try:
        _record(model="openai/gpt-4o").finish(200)
        assert log_lines() == []
    finally:
        access_log.configure(True)


def test_events_count():
    labels = {"provider": "mistral", "deployment": "eu", "outcome": "timeout"}
    before = sample("tokmodel_upstream_attempts_total", labels)
    record = _record()
    record.attempt("mistral", "eu", "timeout")
    assert (record.attempts, record.provider, record.deployment) == (1, "mistral", "eu")
    assert sample("tokmodel_upstream_attempts_total", labels) == before + 1
    from runtime.observability import deployment_up, fallback, stream_closed, stream_opened
    fb = {"from_model": "openai/gpt-4o", "to_model": "mistral/mistral-large-latest"}
    fb_before = sample("tokmodel_fallbacks_total", fb)
    fallback(**fb)
    assert sample("tokmodel_fallbacks_total", fb) == fb_before + 1
    deployment_up("mistral", "eu", False)
    assert sample("tokmodel_deployment_up", {"provider": "mistral", "deployment": "eu"}) == 0
    deployment_up("mistral", "eu", True)
    assert sample("tokmodel_deployment_up", {"provider": "mistral", "deployment": "eu"}) == 1
    open_before = sample("tokmodel_open_streams")
    stream_opened()
    assert sample("tokmodel_open_streams") == open_before + 1
    stream_closed()
    assert sample("tokmodel_open_streams") == open_before


# --- middleware -----------------------------------------------------------------------------

class _Echo:
    """Answers with what the record looked like; `deferred=1` hands the record to a 'stream'."""

    def __init__(self) -> None:
        self.records: list[RequestRecord] = []

    def on_get(self, req: falcon.Request, resp: falcon.Response, **params: str) -> None:
        record = req.context.record
        self.records.append(record)
        if req.get_param_as_bool("deferred"):
            record.deferred = True
        resp.media = {"endpoint": record.endpoint}

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        req.context.record.model = "openai/gpt-4o"
        raise falcon.HTTPBadRequest(title="bad")


@pytest.fixture
def app():
    echo = _Echo()
    application = falcon.App(middleware=[RequestRecords()])
    application.add_route("/v1/chat/completions", echo)
    application.add_route("/v1/models/{model_id:path}", echo)
    application.add_route("/healthz", echo)
    application.add_route("/metrics", echo)
    return falcon.testing.TestClient(application), echo


def test_middleware_request_ids(app, log_lines):
    client, echo = app
    resp = client.simulate_get("/v1/chat/completions",
                               headers={"X-Request-Id": "abc\x01\x7fdef" + "x" * 300})
    assert resp.status_code == 200
    rid = resp.headers["x-request-id"]
    assert rid.startswith("req_") and len(rid) == 4 + 32
    record = echo.records[-1]
    assert record.request_id == rid and record.finished and record.status == 200
    assert record.client_request_id == ("abcdef" + "x" * 300)[:200]
    (line,) = log_lines()
    assert line["request_id"] == rid and line["client_request_id"] == record.client_request_id
    assert line["endpoint"] == "/v1/chat/completions" and line["status"] == 200

    other = client.simulate_get("/v1/chat/completions").headers["x-request-id"]
    assert other != rid and echo.records[-1].client_request_id is None


def test_middleware_error_status_and_route_template(app, log_lines):
    client, echo = app
    assert client.simulate_post("/v1/chat/completions").status_code == 400
    assert client.simulate_get("/v1/models/openai/gpt-4o").status_code == 200
    assert client.simulate_get("/v1/no/such/route").status_code == 404
    bad, model, missing = log_lines()
    assert (bad["status"], bad["model"]) == (400, "openai/gpt-4o")
    assert model["endpoint"] == "/v1/models/{model_id:path}"
    assert (missing["endpoint"], missing["status"]) == ("unmatched", 404)


def test_middleware_leaves_deferred_records_to_their_stream(app, log_lines):
    client, echo = app
    resp = client.simulate_get("/v1/chat/completions", params={"deferred": "1"})
    assert resp.status_code == 200 and resp.headers["x-request-id"]
    record = echo.records[-1]
    assert not record.finished and log_lines() == []
    record.finish(200)  # the stream's close
    assert [line["status"] for line in log_lines()] == [200]


def test_middleware_keeps_other_routes_out_of_log_and_metrics(app, log_lines):
    client, echo = app
    before = metrics_text()[0].count(b'endpoint="/healthz"')
    for path in ("/healthz", "/metrics"):
        resp = client.simulate_get(path)
        assert resp.status_code == 200 and resp.headers["x-request-id"].startswith("req_")
        assert echo.records[-1].quiet and echo.records[-1].finished
    assert log_lines() == []
    assert metrics_text()[0].count(b'endpoint="/healthz"') == before == 0


def test_middleware_finishes_the_record_once_the_answer_has_been_sent(log_lines):
    """Served through AfterAnswer (as gunicorn serves the gateway), the log line and the
    request metrics are written when the server closes the answer it has sent, not before."""
    echo = _Echo()
    application = falcon.App(middleware=[RequestRecords()])
    application.add_route("/v1/chat/completions", echo)
    served = AfterAnswer(application)
    environ = falcon.testing.create_environ("/v1/chat/completions")
    started: list[str] = []
    body = served(environ, lambda status, headers, *exc: started.append(status))
    assert started == ["200 OK"]
    sent = b"".join(body)   # the server writes the answer
    assert json.loads(sent) == {"endpoint": "/v1/chat/completions"}
    assert not echo.records[-1].finished and log_lines() == []
    body.close()   # ... then closes it
    assert echo.records[-1].finished
    assert [(line["endpoint"], line["status"]) for line in log_lines()] == \
        [("/v1/chat/completions", 200)]
