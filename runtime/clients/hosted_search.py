"""A client's hosted web-search tool on its way to a chat provider (Responses and Messages).

The Responses `web_search*` tool and Anthropic's `web_search_*` server tool both ask the
provider to search the web itself. When the provider's chat adapter has a web search of its
own (`ChatAdapter.web_search`: Anthropic's server tool, Gemini's google_search grounding), the
tool becomes chat's `web_search_options`, keeping the approximate `user_location` (either
form: the adapters read the fields at the top level too) and Responses' `search_context_size`;
anything else the tool sets (Anthropic's `max_uses`, allowed or blocked domains) has no chat
equivalent. Otherwise the tool is dropped, the request goes on without it, and the answer names
it in `x-tokmodel-dropped-tools` (DROPPED_TOOLS_HEADER), comma-separated, so a client can tell
that nothing was searched.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

DROPPED_TOOLS_HEADER = "x-tokmodel-dropped-tools"
KEPT_FIELDS = ("user_location", "search_context_size")


def web_search(tool: Mapping[str, Any], can_search: bool,
               dropped: list[str]) -> dict[str, Any] | None:
    """Chat's `web_search_options` for a hosted web-search `tool` when the provider
    `can_search`; else None, with the tool's name added to `dropped`."""
    if not can_search:
        dropped.append(str(tool.get("name") or "web_search"))
        return None
    return {k: tool[k] for k in KEPT_FIELDS if tool.get(k) is not None}


def dropped_headers(dropped: Iterable[str]) -> dict[str, str]:
    """The answer's header naming the dropped tools (none when nothing was dropped)."""
    names = ",".join(dict.fromkeys(dropped))
    return {DROPPED_TOOLS_HEADER: names} if names else {}
