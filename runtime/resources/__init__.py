"""One stateless Falcon resource per endpoint kind; `RESOURCES` maps kind -> class."""

from runtime.resources.audio import AudioSpeech, AudioTranscriptions, AudioTranslations
from runtime.resources.chat import ChatCompletions
from runtime.resources.embeddings import Embeddings
from runtime.resources.images import ImageEdits, ImageGenerations, ImageVariations
from runtime.resources.messages import Messages
from runtime.resources.models import Models
from runtime.resources.rerank import Rerank
from runtime.resources.responses import Responses, ResponsesCompact

RESOURCES = {
    "chat": ChatCompletions,
    "models": Models,
    "embeddings": Embeddings,
    "rerank": Rerank,
    "images.generations": ImageGenerations,
    "images.edits": ImageEdits,
    "images.variations": ImageVariations,
    "audio.speech": AudioSpeech,
    "audio.transcriptions": AudioTranscriptions,
    "audio.translations": AudioTranslations,
    "messages": Messages,
    "responses": Responses,
    "responses.compact": ResponsesCompact,
}

__all__ = ["RESOURCES"]
