"""Admission: what one request may start, checked before the work it would cost.

Order: the counts (items, messages, prompts) were checked while the body was validated
(`protocol/limits.py`); here, before rendering or tokenizing, the prompt text's length and the number of
sequences (prompts x n); after tokenizing, the prompt tokens and the total work. Every refusal is a 400 that
names the field and the limit.

The total work of a request is the sum over the sequences it starts of prompt tokens + max_tokens, and
it may not exceed `server.max_request_tokens`:
- with max_tokens given, a request over the bound is refused (400 on max_tokens);
- without it, each sequence gets the room its context leaves, but no more than an equal share of what the
  bound leaves after the prompts: (max_request_tokens - prompt tokens of all sequences) // sequences. One
  sequence thus keeps "the whole context" (a context is smaller than the bound), while 64 prompts x n=2
  share the bound instead of each taking a context.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import fields
from typing import TYPE_CHECKING

from tkr_embed.harmony.types import ChatMessage
from tkr_embed.protocol.limits import RequestLimits, request_limits, set_request_limits
from tkr_embed.services.errors import BadRequestError
from tkr_embed.services.prompt_pool import PromptPool, set_prompt_pool

if TYPE_CHECKING:
    from tkr_embed.config import ServerConfig


def configure_admission(server: ServerConfig) -> PromptPool:
    """Install the settings' request limits and prompt pool for this process (at start-up); returns the pool."""
    # The server section names each limit as RequestLimits does.
    set_request_limits(RequestLimits(**{limit.name: getattr(server, limit.name) for limit in fields(RequestLimits)}))
    pool = PromptPool(workers=server.prompt_workers, queue=server.prompt_queue)
    set_prompt_pool(pool)
    return pool


def chat_chars(messages: Sequence[ChatMessage], *texts: str | None) -> int:
    """Characters of the text a chat prompt is rendered from (one pass over the messages, no rendering)."""
    total = sum(len(text or "") for text in texts)
    for message in messages:
        total += len(message.content or "") + len(message.reasoning or "")
        total += sum(len(call.arguments) + len(call.name) for call in message.tool_calls)
    return total


def check_prompt_chars(num_chars: int, param: str) -> None:
    bound = request_limits().max_prompt_chars
    if num_chars > bound:
        raise BadRequestError(
            f"the prompt text is {num_chars} characters; at most {bound} are accepted in one request "
            "(the server's max_prompt_chars)",
            param,
            code="prompt_too_large",
        )


def check_sequences(num_prompts: int, n: int) -> None:
    bound = request_limits().max_sequences
    if num_prompts * n > bound:
        what = f"{num_prompts} prompts x n={n}" if num_prompts > 1 else f"n={n}"
        raise BadRequestError(
            f"{what} asks for {num_prompts * n} sequences; at most {bound} are accepted in one request "
            "(the server's max_sequences)",
            "n",
            code="too_many_sequences",
        )


def check_prompt_tokens(num_tokens: int, param: str) -> None:
    bound = request_limits().max_prompt_tokens
    if num_tokens > bound:
        raise BadRequestError(
            f"the prompts hold {num_tokens} tokens; at most {bound} are accepted in one request "
            "(the server's max_prompt_tokens)",
            param,
            code="prompt_too_large",
        )


def default_max_tokens_cap(
    prompt_lengths: Sequence[int], n: int, requested: int | None, param: str, prompt_param: str
) -> int | None:
    """Apply the work bound (module docstring) to a request of these prompts, each run n times.

    Returns the cap of each sequence's default max_tokens (None when the client gave max_tokens, which
    fits); raises BadRequestError when the request cannot fit the bound."""
    bound = request_limits().max_request_tokens
    sequences = len(prompt_lengths) * n
    prompt_work = sum(prompt_lengths) * n
    if requested is not None:
        work = prompt_work + requested * sequences
        if work > bound:
            raise BadRequestError(
                f"{param}={requested} for {sequences} sequence(s) of {prompt_work} prompt tokens asks for {work} "
                f"tokens of work; at most {bound} are accepted in one request (the server's max_request_tokens)",
                param,
                code="request_too_large",
            )
        return None
    share = (bound - prompt_work) // sequences
    if share < 1:
        raise BadRequestError(
            f"{sequences} sequence(s) of {prompt_work} prompt tokens leave no room under the server's "
            f"max_request_tokens ({bound})",
            prompt_param,
            code="request_too_large",
        )
    return share
