"""Constrained sampling's mask applied in one pass: logits and a packed bitmask in, masked logits out.

Unpacking the step's bitmask to one bool per id and masking with it reads and writes the [S, V] logits several
times over (an int32 per id, then a bool per id, then the masked copy) in half a dozen launches; this kernel reads
each logit and its mask word once and writes the masked copy. Out of place: a decode graph's output buffer is
never written.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from tkr_embed.engine.constraints import mask_words

BLOCK = 4096  # ids a program masks


@triton.jit
def _masked_logits_kernel(
    logits_ptr, words_ptr, out_ptr, V, stride_logits, stride_words, stride_out, BLOCK: tl.constexpr
):
    row = tl.program_id(0).to(tl.int64)
    ids = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    inside = ids < V
    x = tl.load(logits_ptr + row * stride_logits + ids, mask=inside, other=0.0)
    word = tl.load(words_ptr + row * stride_words + (ids >> 5), mask=inside, other=0)
    allowed = ((word >> (ids & 31)) & 1) != 0  # an arithmetic shift: the bit is right whatever the sign
    tl.store(out_ptr + row * stride_out + ids, tl.where(allowed, x, float("-inf")), mask=inside)


def masked_logits(logits: torch.Tensor, words: torch.Tensor) -> torch.Tensor:
    """logits [S, V] (CUDA, float32); words int32 [S, ceil(V / 32)], bit `i % 32` of word `i // 32` set for an
    allowed id `i` -> a new [S, V] with -inf at every id not allowed."""
    assert logits.dim() == 2 and words.dim() == 2 and words.dtype == torch.int32
    assert words.shape == (logits.shape[0], mask_words(logits.shape[1])) and logits.stride(1) == 1 == words.stride(1)
    out = torch.empty_like(logits)
    rows, vocab = logits.shape
    if rows:
        grid = (rows, triton.cdiv(vocab, BLOCK))
        _masked_logits_kernel[grid](
            logits, words, out, vocab, logits.stride(0), words.stride(0), out.stride(0), BLOCK=BLOCK
        )
    return out
