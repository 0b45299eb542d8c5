"""What every service needs: the engine, the tokenizer and the model's limits."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from tkr_embed.engine.client import EngineClient
from tkr_embed.engine.errors import InvalidRequestError
from tkr_embed.engine.llm_engine import check_request
from tkr_embed.engine.sampling_params import SamplingParams
from tkr_embed.engine.tokenizer import Tokenizer
from tkr_embed.services.errors import BadRequestError, ModelNotFoundError
from tkr_embed.services.prompt_pool import PromptPool, prompt_pool

Request = TypeVar("Request")
Prepared = TypeVar("Prepared")


@dataclass(frozen=True)
class ModelContext:
    engine: EngineClient
    tokenizer: Tokenizer
    model_id: str  # the name answers carry
    context_length: int
    default_reasoning_effort: str = "medium"
    pool: PromptPool | None = None  # None: the process's pool (services/prompt_pool.py)
    aliases: tuple[str, ...] = ()  # more names a request may give as `model` (`--served-model-name A B`)

    @property
    def served_names(self) -> tuple[str, ...]:
        """Every name a request may give as `model`, the one answers carry first."""
        return (self.model_id, *(alias for alias in self.aliases if alias != self.model_id))

    async def off_loop(self, prepare: Callable[[Request], Prepared], request: Request) -> Prepared:
        """A service's `prepare` (render, tokenize, checks) on the prompt pool, never on the event loop."""
        return await (self.pool or prompt_pool()).run(prepare, request)

    def check_model(self, requested: str | None) -> None:
        """The OpenAI `model` field: absent, or a name we serve (404 otherwise, as OpenAI answers)."""
        if requested and requested not in self.served_names:
            served = ", ".join(repr(name) for name in self.served_names)
            raise ModelNotFoundError(
                f"the model {requested!r} does not exist; this server serves {served}",
                "model",
                code="model_not_found",
            )

    def max_tokens_for(
        self,
        num_prompt_tokens: int,
        requested: int | None,
        param: str,
        prompt_param: str,
        default_cap: int | None = None,
    ) -> int:
        """The completion budget: `requested`, or the room left (at most `default_cap`, the request's share of
        the work bound: services/admission.py); 400 when it cannot fit."""
        if num_prompt_tokens >= self.context_length:
            raise BadRequestError(
                f"the prompt is {num_prompt_tokens} tokens; the context holds {self.context_length}",
                prompt_param,
                code="context_length_exceeded",
            )
        room = self.context_length - num_prompt_tokens
        if requested is None:
            return room if default_cap is None else min(room, default_cap)
        if requested > room:
            raise BadRequestError(
                f"{param}={requested} cannot fit: the prompt is {num_prompt_tokens} tokens and the context "
                f"holds {self.context_length}, so at most {room} can be generated",
                param,
                code="context_length_exceeded",
            )
        return requested

    def check_prompt(self, prompt_token_ids: list[int], params: SamplingParams, prompt_param: str) -> None:
        """The engine's own check of a request (a non-empty prompt of ids in the vocabulary, that fits), run here
        before the ids are decoded and before any prompt of a list is submitted; the error names the prompt as the
        client spelled it (`prompt[1]`)."""
        try:
            check_request(prompt_token_ids, params, self.context_length, self.tokenizer.vocab_size, has_tokenizer=True)
        except InvalidRequestError as exc:
            raise BadRequestError(exc.message, prompt_param if exc.param == "prompt" else exc.param) from exc


def new_request_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def unix_now() -> int:
    return int(time.time())
