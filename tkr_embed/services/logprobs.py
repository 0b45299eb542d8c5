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


# JSON has no -inf: a token the model rules out entirely is reported with OpenAI's floor instead.
MIN_LOGPROB = -9999.0


def _finite(logprob: float) -> float:
    return max(logprob, MIN_LOGPROB)


def _top_logprobs(tokenizer: Tokenizer, entry: TokenLogprob, top_k: int) -> dict[str, float]:
    """The top k alternatives and the token itself: OpenAI's legacy shape has up to k + 1 entries. The token's own
    value is written last, so where it is also an alternative it keeps exactly its logprob: lm-eval calls a
    continuation greedy when each token's logprob equals the largest value here."""
    top = {
        tokenizer.decode([alt_id]): _finite(alt_logprob)
        for alt_id, alt_logprob in entry.top_logprobs[:top_k]
        if alt_id != entry.token_id
    }
    top[tokenizer.decode([entry.token_id])] = _finite(entry.logprob)
    return top


def completion_logprobs(
    tokenizer: Tokenizer,
    token_ids: Sequence[int],
    logprobs: Sequence[TokenLogprob | None],
    top_k: int,
    text_offset: int,
) -> CompletionLogprobs:
    """The legacy completions `logprobs` of these tokens, the first at `text_offset` of the choice's text. An entry
    of None (the first prompt token, which nothing predicts) has null logprobs."""
    result = CompletionLogprobs()
    offset = text_offset
    for token_id, entry in zip(token_ids, logprobs, strict=True):
        token = tokenizer.decode([token_id])
        result.tokens.append(token)
        result.token_logprobs.append(None if entry is None else _finite(entry.logprob))
        result.top_logprobs.append(None if entry is None else _top_logprobs(tokenizer, entry, top_k))
        result.text_offset.append(offset)
        offset += len(token)
    return result
