"""Provider adapters by dialect: how providers are spoken to.

A provider with a new wire shape adds its modules here and its entries in the tables below;
the descriptor's `dialect` picks the adapter, never the provider's name. `SERVED` says which
endpoint kinds each dialect is spoken to natively (chat, embeddings, rerank and token counts
through the adapter tables; the other kinds are passed through in the provider's own
format, which for Messages is Anthropic's and for Responses, images and audio OpenAI's).
A completeness test holds it against specs/dialects.yaml and every descriptor.
"""

from __future__ import annotations

from runtime.providers.anthropic_chat import AnthropicChat
from runtime.providers.base import ChatAdapter, UpstreamCall
from runtime.providers.embeddings import EMBED_ADAPTERS
from runtime.providers.gemini_chat import GeminiChat
from runtime.providers.openai_chat import OpenAIChat
from runtime.providers.rerank import RERANK_ADAPTERS
from runtime.providers.token_count import COUNTERS

CHAT_ADAPTERS: dict[str, ChatAdapter] = {
    "openai": OpenAIChat(),
    "anthropic": AnthropicChat(),
    "gemini": GeminiChat(),
}

_PASSTHROUGH = {
    "messages": ("anthropic",),
    "responses": ("openai",),
    "responses.compact": ("openai",),
    "images.generations": ("openai",),
    "images.edits": ("openai",),
    "images.variations": ("openai",),
    "audio.speech": ("openai",),
    "audio.transcriptions": ("openai",),
    "audio.translations": ("openai",),
}

SERVED: dict[str, frozenset[str]] = {}
for _kind, _dialects in [("chat", CHAT_ADAPTERS), ("embeddings", EMBED_ADAPTERS),
                         ("rerank", RERANK_ADAPTERS), ("messages.count_tokens", COUNTERS),
                         *_PASSTHROUGH.items()]:
    for _dialect in _dialects:
        SERVED[_dialect] = SERVED.get(_dialect, frozenset()) | {_kind}

__all__ = ["CHAT_ADAPTERS", "SERVED", "ChatAdapter", "UpstreamCall"]
