"""What every service needs: the engine, the tokenizer and the model's limits."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

from tkr_embed.engine.client import EngineClient
from tkr_embed.engine.tokenizer import Tokenizer
from tkr_embed.services.errors import BadRequestError, ModelNotFoundError


@dataclass(frozen=True)
class ModelContext:
    engine: EngineClient
    tokenizer: Tokenizer
    model_id: str
    context_length: int
    default_reasoning_effort: str = "medium"

    def check_model(self, requested: str | None) -> None:
        """The OpenAI `model` field: absent, or the id we serve (404 otherwise, as OpenAI answers)."""
        if requested and requested != self.model_id:
            raise ModelNotFoundError(
                f"the model {requested!r} does not exist; this server serves {self.model_id!r}", "model",
                code="model_not_found",
            )

    def max_tokens_for(self, num_prompt_tokens: int, requested: int | None, param: str, prompt_param: str) -> int:
        """The completion budget: `requested`, or all the room left; 400 when it cannot fit."""
        if num_prompt_tokens >= self.context_length:
            raise BadRequestError(
                f"the prompt is {num_prompt_tokens} tokens; the context holds {self.context_length}",
                prompt_param, code="context_length_exceeded",
            )
        room = self.context_length - num_prompt_tokens
        if requested is None:
            return room
        if requested > room:
            raise BadRequestError(
                f"{param}={requested} cannot fit: the prompt is {num_prompt_tokens} tokens and the context "
                f"holds {self.context_length}, so at most {room} can be generated",
                param, code="context_length_exceeded",
            )
        return requested


def new_request_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def unix_now() -> int:
    return int(time.time())
