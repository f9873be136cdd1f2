"""One gateway in front of every fake non-chat provider, for the embeddings, rerank, images
and audio test modules.

``media_stack(workdir)`` starts FakeOpenAIMedia (OpenAI, and vLLM at the same address),
FakeGemini, FakeCohere, FakeJina and FakeVoyage, then the gateway under gunicorn pointed at
them; ``Stack.stop()`` stops them all.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tests.harness import Gateway, start_gateway

from .embed_upstream import FakeGemini
from .media_upstream import FakeOpenAIMedia
from .rerank_upstream import FakeCohere, FakeJina, FakeVoyage


@dataclass
class Stack:
    gateway: Gateway
    openai: FakeOpenAIMedia
    gemini: FakeGemini
    cohere: FakeCohere
    jina: FakeJina
    voyage: FakeVoyage

    def reset(self) -> None:
        for fake in (self.openai, self.gemini, self.cohere, self.jina, self.voyage):
            fake.reset()

    def stop(self) -> None:
        self.gateway.stop()
        for fake in (self.openai, self.gemini, self.cohere, self.jina, self.voyage):
            fake.stop()


def media_stack(workdir: Path, env: dict[str, str] | None = None, *,
                chunk_delay: float = 0.0) -> Stack:
    openai = FakeOpenAIMedia(chunk_delay=chunk_delay).start()
    gemini = FakeGemini().start()
    cohere = FakeCohere().start()
    jina = FakeJina().start()
    voyage = FakeVoyage().start()
    gateway = start_gateway(workdir, {
        "OPENAI_BASE_URL": openai.base_url, "OPENAI_API_KEY": "sk-up",
        "VLLM_BASE_URL": openai.base_url, "VLLM_API_KEY": "sk-up",
        "GOOGLE_BASE_URL": gemini.origin, "GOOGLE_API_KEY": "goog-key",
        "COHERE_BASE_URL": cohere.origin, "COHERE_API_KEY": "co-key",
        "JINA_BASE_URL": jina.base_url, "JINA_API_KEY": "jina-key",
        "VOYAGE_BASE_URL": voyage.base_url, "VOYAGE_API_KEY": "voyage-key",
        **(env or {})})
    return Stack(gateway, openai, gemini, cohere, jina, voyage)
