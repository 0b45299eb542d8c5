"""Updates that carry several tokens (a consumer that fell behind reads its queued updates as one) decode to what
one token an update decodes to, with each tool call's argument text in one entry a chunk."""

from __future__ import annotations

from tkr_embed.engine.outputs import CompletionOutput, FinishReason
from tkr_embed.harmony.tokenizer import get_encoding
from tkr_embed.services.harmony_decode import HarmonyDecoder

# What the model writes after the rendered `<|start|>assistant`: reasoning, then two tool calls.
REPLY = (
    "<|channel|>analysis<|message|>The user wants the weather in two cities.<|end|>"
    "<|start|>assistant<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>"
    '{"city": "Paris", "unit": "celsius"}<|call|>'
)


def decode(tokens: list[int], sizes: list[int]) -> list:
    """The tokens as updates of the given sizes -> the decoder's delta for each."""
    decoder, deltas, start = HarmonyDecoder(1, None, []), [], 0
    for number, size in enumerate(sizes):
        chunk = tokens[start : start + size]
        start += size
        last = number == len(sizes) - 1
        output = CompletionOutput(0, chunk, tokens[:start], "", "", FinishReason.STOP if last else None)
        deltas.extend(decoder.step([output]))
    return deltas


def test_several_tokens_an_update_decode_as_one_token_an_update() -> None:
    tokens = list(get_encoding().encode(REPLY, allowed_special="all"))
    single = decode(tokens, [1] * len(tokens))
    merged = decode(tokens, [7] * (len(tokens) // 7) + [len(tokens) % 7 or 7])
    assert sum(len(delta.tool_calls) for delta in merged) < sum(len(delta.tool_calls) for delta in single)
    for field in ("reasoning", "content"):
        assert "".join(getattr(d, field) for d in merged) == "".join(getattr(d, field) for d in single)
    for deltas in (single, merged):
        calls = [call for delta in deltas for call in delta.tool_calls]
        assert [c.name for c in calls if c.name] == ["get_weather"] and len({c.id for c in calls if c.id}) == 1
        assert "".join(c.arguments for c in calls) == '{"city": "Paris", "unit": "celsius"}'
    for delta in merged:  # one entry a call in each chunk, as OpenAI streams them
        assert len({call.index for call in delta.tool_calls}) == len(delta.tool_calls)
    assert merged[-1].finish_reason == single[-1].finish_reason == "tool_calls"
