"""One stateless Falcon resource per endpoint kind; `RESOURCES` maps kind -> class."""

from runtime.resources.chat import ChatCompletions
from runtime.resources.models import Models

RESOURCES = {
    "chat": ChatCompletions,
    "models": Models,
}

__all__ = ["RESOURCES"]
