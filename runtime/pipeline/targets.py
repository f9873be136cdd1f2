"""Re-targeting an upstream call built for a model's first deployment to another deployment
of the same provider: another base URL and another credential, the same request.

Adapters build a call once (translation, image downloads and multipart encoding are not
repeated per attempt); only the URL prefix, the auth header and the query credential differ
between deployments.
"""

from __future__ import annotations

from dataclasses import replace

from runtime.catalogue import Model
from runtime.providers.base import UpstreamCall, query_auth


def retarget(call: UpstreamCall, built_for: Model, target: Model) -> UpstreamCall:
    old, new = built_for.provider, target.provider
    if new.base_url == old.base_url and new.api_key == old.api_key:
        return call
    url = call.url
    old_base = old.base_url.rstrip("/")
    if url.startswith(old_base):
        url = new.base_url.rstrip("/") + url[len(old_base):]
    headers = {k: v for k, v in call.headers.items() if k not in old.auth_headers()}
    headers.update(new.auth_headers())
    params = {k: v for k, v in call.params.items() if k not in query_auth(built_for)}
    params.update(query_auth(target))
    return replace(call, url=url, headers=headers, params=params)
