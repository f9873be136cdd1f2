"""Gateway settings, read once from the environment (`Settings.from_env`).

| variable | default |
| TOKMODEL_DATABASE_URL | sqlite:///var/tokmodel.db |
| TOKMODEL_PROVIDERS | unset: the compiled default catalogue (providers.yaml) |
| TOKMODEL_MAX_BODY_BYTES | 26214400 (25 MiB) |
| TOKMODEL_IMAGE_FETCH_MAX_BYTES | 20971520 (20 MiB), for providers that need image bytes |
| TOKMODEL_IMAGE_FETCH_ALLOW_PRIVATE | unset: image URLs on private/loopback addresses refused |
| TOKMODEL_METRICS_TOKEN | unset: GET /metrics is open; set: `Authorization: Bearer <it>` needed |
| TOKMODEL_SHUTDOWN_TIMEOUT | 30 seconds: after SIGTERM, the time open requests and streams get |
| TOKMODEL_RESPONSES_RETENTION_DAYS | 30: how long stored Responses conversations are kept |
| TOKMODEL_BODY_IDLE_TIMEOUT | 30 seconds: a request body silent that long is cut with a 408 |
| TOKMODEL_MAX_IMAGES_PER_REQUEST | 16: image URLs the gateway downloads for one request |
| TOKMODEL_MAX_UPSTREAM_ANSWER_BYTES | 67108864 (64 MiB): a whole (non-stream) upstream answer |
| TOKMODEL_MAX_STREAM_EVENT_BYTES | 16777216 (16 MiB): one event of an upstream stream |
| TOKMODEL_USAGE_RETENTION_DAYS | unset: usage rows kept forever (runtime/admin/retention.py) |
| TOKMODEL_AUDIT_RETENTION_DAYS | 365: console audit-log rows kept; 0: forever (retention.py) |
| TOKMODEL_USAGE_ROLLUP_SECONDS | 30: how often usage rows are folded into daily sums (rollup.py) |
| TOKMODEL_ADMIN_TOKEN | unset: the admin API and operator pages are off (runtime/admin) |
| TOKMODEL_REDIS_URL | unset: keys' rpm/tpm counters in the database; set: in this Redis |
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Settings:
    database_url: str = "sqlite:///var/tokmodel.db"
    providers_file: str | None = None
    max_body_bytes: int = 25 * 1024 * 1024
    image_fetch_max_bytes: int = 20 * 1024 * 1024
    image_fetch_allow_private: bool = False
    metrics_token: str | None = field(default=None, repr=False)  # a secret: not in reprs
    shutdown_timeout: float = 30.0
    responses_retention_days: float = 30.0
    body_idle_timeout: float = 30.0
    max_images_per_request: int = 16
    max_upstream_answer_bytes: int = 64 * 1024 * 1024
    max_stream_event_bytes: int = 16 * 1024 * 1024
    redis_url: str | None = field(default=None, repr=False)  # may hold a password

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        base = cls()
        return cls(
            database_url=env.get("TOKMODEL_DATABASE_URL") or base.database_url,
            providers_file=env.get("TOKMODEL_PROVIDERS") or None,
            max_body_bytes=int(env.get("TOKMODEL_MAX_BODY_BYTES") or base.max_body_bytes),
            image_fetch_max_bytes=int(env.get("TOKMODEL_IMAGE_FETCH_MAX_BYTES")
                                      or base.image_fetch_max_bytes),
            image_fetch_allow_private=env.get("TOKMODEL_IMAGE_FETCH_ALLOW_PRIVATE", "").lower()
            in ("1", "true", "yes"),
            metrics_token=env.get("TOKMODEL_METRICS_TOKEN") or None,
            shutdown_timeout=float(env.get("TOKMODEL_SHUTDOWN_TIMEOUT") or base.shutdown_timeout),
            responses_retention_days=float(env.get("TOKMODEL_RESPONSES_RETENTION_DAYS")
                                           or base.responses_retention_days),
            body_idle_timeout=float(env.get("TOKMODEL_BODY_IDLE_TIMEOUT")
                                    or base.body_idle_timeout),
            max_images_per_request=int(env.get("TOKMODEL_MAX_IMAGES_PER_REQUEST")
                                       or base.max_images_per_request),
            max_upstream_answer_bytes=int(env.get("TOKMODEL_MAX_UPSTREAM_ANSWER_BYTES")
                                          or base.max_upstream_answer_bytes),
            max_stream_event_bytes=int(env.get("TOKMODEL_MAX_STREAM_EVENT_BYTES")
                                       or base.max_stream_event_bytes),
            redis_url=env.get("TOKMODEL_REDIS_URL") or None,
        )
