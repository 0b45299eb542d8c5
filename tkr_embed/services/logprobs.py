"""Engine logprobs → the OpenAI chat and legacy completions shapes."""

from __future__ import annotations

from collections.abc import Sequence

from tkr_embed.engine.outputs import TokenLogprob
from tkr_embed.engine.tokenizer import Tokenizer
from tkr_embed.protocol.openai_chat import ChoiceLogprobs, TokenLogprobOut, TopLogprob
from tkr_embed.protocol.openai_completions import CompletionLogprobs


def chat_logprobs(tokenizer: Tokenizer, logprobs: Sequence[TokenLogprob], top_k: int) -> ChoiceLogprobs:
    def piece(token_id: int) -> tuple[str, list[int]]:
        raw = tokenizer.decode_bytes([token_id])
        return raw.decode("utf-8", errors="replace"), list(raw)

    content = []
    for entry in logprobs:
        token, token_bytes = piece(entry.token_id)
        top = []
        for alt_id, alt_logprob in entry.top_logprobs[:top_k]:
            alt_token, alt_bytes = piece(alt_id)
            top.append(TopLogprob(token=alt_token, logprob=alt_logprob, bytes=alt_bytes))
        content.append(TokenLogprobOut(token=token, logprob=entry.logprob, bytes=token_bytes, top_logprobs=top))
    return ChoiceLogprobs(content=content)


def completion_logprobs(
    tokenizer: Tokenizer, logprobs: Sequence[TokenLogprob], top_k: int, text_offset: int
) -> CompletionLogprobs:
    result = CompletionLogprobs()
    offset = text_offset
    for entry in logprobs:
        token = tokenizer.decode([entry.token_id])
        result.tokens.append(token)
        result.token_logprobs.append(entry.logprob)
        result.top_logprobs.append(
            {tokenizer.decode([alt_id]): alt_lp for alt_id, alt_lp in entry.top_logprobs[:top_k]} if top_k else None
        )
        result.text_offset.append(offset)
        offset += len(token)
    return result
