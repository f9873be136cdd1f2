"""Chat adapters by provider dialect: how to reach a provider's chat API from an OpenAI chat
request and turn its answers (whole, streamed, or errors) back into OpenAI chat shapes.

A provider with a new wire shape adds one module here and one entry in CHAT_ADAPTERS; the
descriptor's `dialect` picks the adapter, never the provider's name.
"""

from __future__ import annotations

from runtime.providers.anthropic_chat import AnthropicChat
from runtime.providers.base import ChatAdapter, UpstreamCall
from runtime.providers.gemini_chat import GeminiChat
from runtime.providers.openai_chat import OpenAIChat

CHAT_ADAPTERS: dict[str, ChatAdapter] = {
    "openai": OpenAIChat(),
    "anthropic": AnthropicChat(),
    "gemini": GeminiChat(),
}

__all__ = ["CHAT_ADAPTERS", "ChatAdapter", "UpstreamCall"]
