"""Sampling parameters and stop conditions of one request (no torch here)."""

from __future__ import annotations

from dataclasses import dataclass, field

from tkr_embed.engine.constraints import TokenConstraint
from tkr_embed.engine.errors import InvalidRequestError

MAX_TOP_LOGPROBS = 20
MAX_LOGIT_BIAS = 300  # token ids a request may bias, as OpenAI allows


@dataclass
class SamplingParams:
    """How to pick tokens and when to stop.

    `max_tokens=None` means "until the context is full". `top_k <= 0` disables top-k.
    `logprobs=None` returns no logprobs; `logprobs=k` returns the chosen token's logprob and the
    top k alternatives (k may be 0). `prompt_logprobs=k` returns, for every prompt token after the
    first, its logprob given the tokens before it and the top k alternatives at its position.
    `max_tokens=0` prefills the prompt (scoring it when asked) and finishes with no token generated.
    `seed` makes the request reproducible whatever else is batched with it. `stop` strings are matched
    on the decoded text and never emitted. `logit_bias` adds (token id, bias) to the logits before any other
    choice (OpenAI's meaning: -100 bans a token, +100 all but forces it); logprobs stay those of the model.
    """

    n: int = 1
    max_tokens: int | None = 256
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    seed: int | None = None
    logprobs: int | None = None
    prompt_logprobs: int | None = None
    ignore_eos: bool = False
    stop_token_ids: list[int] = field(default_factory=list)
    stop: list[str] = field(default_factory=list)
    include_stop_str_in_output: bool = False
    constraint: TokenConstraint | None = None  # which tokens may come next (engine/constraints.py); None: any
    logit_bias: tuple[tuple[int, float], ...] = ()  # (token id, bias in [-100, 100]), ids distinct

    def __post_init__(self) -> None:
        self.validate()

    @property
    def is_greedy(self) -> bool:
        return self.temperature == 0.0

    @property
    def is_penalised(self) -> bool:
        """Whether a penalty reads the sequence's history (its prompt and output ids)."""
        return self.repetition_penalty != 1.0 or self.presence_penalty != 0.0 or self.frequency_penalty != 0.0

    @property
    def is_deterministic(self) -> bool:
        """Same input gives the same output: greedy, or seeded."""
        return self.is_greedy or self.seed is not None

    def validate(self) -> None:
        """Raise InvalidRequestError (naming the field) for any value that cannot be served."""
        if not isinstance(self.n, int) or not 1 <= self.n <= 128:
            raise InvalidRequestError("n must be an integer between 1 and 128", "n")
        if self.max_tokens is not None and (not isinstance(self.max_tokens, int) or self.max_tokens < 0):
            raise InvalidRequestError("max_tokens must be a non-negative integer", "max_tokens")
        if not 0.0 <= self.temperature <= 100.0:
            raise InvalidRequestError("temperature must be between 0 and 100", "temperature")
        if not 0.0 < self.top_p <= 1.0:
            raise InvalidRequestError("top_p must be in (0, 1]", "top_p")
        if not isinstance(self.top_k, int):
            raise InvalidRequestError("top_k must be an integer", "top_k")
        if not 0.0 <= self.min_p <= 1.0:
            raise InvalidRequestError("min_p must be in [0, 1]", "min_p")
        if not 0.0 < self.repetition_penalty <= 10.0:
            raise InvalidRequestError("repetition_penalty must be in (0, 10]", "repetition_penalty")
        if not -2.0 <= self.presence_penalty <= 2.0:
            raise InvalidRequestError("presence_penalty must be between -2 and 2", "presence_penalty")
        if not -2.0 <= self.frequency_penalty <= 2.0:
            raise InvalidRequestError("frequency_penalty must be between -2 and 2", "frequency_penalty")
        if self.logprobs is not None and not 0 <= self.logprobs <= MAX_TOP_LOGPROBS:
            raise InvalidRequestError(f"logprobs must be between 0 and {MAX_TOP_LOGPROBS}", "logprobs")
        if self.prompt_logprobs is not None and (
            not isinstance(self.prompt_logprobs, int) or not 0 <= self.prompt_logprobs <= MAX_TOP_LOGPROBS
        ):
            raise InvalidRequestError(
                f"prompt_logprobs must be an integer between 0 and {MAX_TOP_LOGPROBS}", "prompt_logprobs"
            )
        if self.seed is not None and not isinstance(self.seed, int):
            raise InvalidRequestError("seed must be an integer", "seed")
        if len(self.logit_bias) > MAX_LOGIT_BIAS or any(
            not isinstance(token_id, int) or token_id < 0 or not -100.0 <= bias <= 100.0
            for token_id, bias in self.logit_bias
        ):
            raise InvalidRequestError(
                f"logit_bias maps at most {MAX_LOGIT_BIAS} token ids to biases between -100 and 100", "logit_bias"
            )
        if any(not isinstance(s, str) or not s for s in self.stop):
            raise InvalidRequestError("stop must be non-empty strings", "stop")
        if len(self.stop) > 16:
            raise InvalidRequestError("at most 16 stop strings", "stop")
