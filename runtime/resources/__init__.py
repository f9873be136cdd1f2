"""The /v1 endpoints as thin declarations: for each endpoint kind of specs/endpoints.yaml,
which client format serves it and with which hold policy (`ROUTES`), or which plain resource
serves it (`RESOURCES`, unpriced). `create_app` refuses to start when an endpoint has
neither, so no endpoint is ever silently missing.
"""

from __future__ import annotations

import falcon

from runtime.clients import audio, chat, embeddings, images, messages, rerank, responses
from runtime.pipeline.route import Route
from runtime.pipeline.run import Pipeline
from runtime.resources.count_tokens import CountTokens
from runtime.resources.models import Models
from runtime.resources.stored_responses import StoredResponseItems, StoredResponseResource

ROUTES: dict[str, Route] = {route.kind: route for route in (
    Route("chat", chat.hold, chat.ChatExchange, fallbacks=True),
    Route("messages", chat.hold, messages.exchange, serves="chat", errors="anthropic",
          fallbacks=True, forward_headers=("anthropic-beta",),
          id_headers=("request-id",)),
    Route("responses", responses.hold, responses.ResponsesExchange, serves="chat",
          fallbacks=True),
    Route("responses.compact", responses.compact_hold, responses.CompactExchange,
          serves="chat", fallbacks=True),
    Route("embeddings", embeddings.hold, embeddings.EmbeddingsExchange),
    Route("rerank", rerank.hold, rerank.RerankExchange),
    Route("images.generations", images.generation_hold, images.generations,
          default_model=True),
    Route("images.edits", images.upload_hold, images.edits, form=True, default_model=True,
          check=images.check_edit, prehold=images.upload_prehold),
    Route("images.variations", images.upload_hold, images.variations, form=True,
          default_model=True, check=images.check_variation, prehold=images.upload_prehold),
    Route("audio.speech", audio.speech_hold, audio.SpeechExchange),
    Route("audio.transcriptions", audio.transcription_hold, audio.transcriptions, form=True,
          check=audio.upload, prehold=audio.transcription_prehold),
    Route("audio.translations", audio.transcription_hold, audio.translations, form=True,
          check=audio.upload, prehold=audio.transcription_prehold),
)}

RESOURCES = {"models": Models, "messages.count_tokens": CountTokens,
             "responses.retrieve": StoredResponseResource,
             "responses.input_items": StoredResponseItems}


class PricedResource:
    """A priced endpoint: every POST runs the pipeline with the endpoint's route."""

    def __init__(self, pipeline: Pipeline, route: Route) -> None:
        self.pipeline = pipeline
        self.route = route

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        self.pipeline.handle(req, resp, self.route)


__all__ = ["RESOURCES", "ROUTES", "PricedResource"]
