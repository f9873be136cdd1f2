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
        )
