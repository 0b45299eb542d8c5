"""Sampling for the MLX runner, with the torch backend's exact semantics.

Plain greedy rows (no penalties, no logit bias, no logprobs, no constraint) take their argmax on the device, so only
the token ids cross to the host. Any other batch hands its logits [S, V] to the shared torch Sampler on
the CPU: the same penalties, constraint masks, top-k/top-p/min-p, logprobs and, above all, the same
seeded RNG, so a seeded request draws the same token from the same logits on both backends. (On unified
memory the copy of S x V floats costs little next to the forward pass.)
"""

from __future__ import annotations

from collections.abc import Sequence

import mlx.core as mx
import numpy as np
import torch

from tkr_embed.backends.torch.sampler import Sampler
from tkr_embed.engine.runner import BatchEntry, SampledToken


def _is_plain_greedy(entry: BatchEntry) -> bool:
    params = entry.sampling
    return (
        params is not None
        and params.is_greedy
        and params.logprobs is None
        and not params.is_penalised
        and entry.allowed_tokens is None
        and not params.logit_bias
    )


class MlxSampler:
    """Invariant (as the torch Sampler): a seeded row's token depends only on its logits, seed and step."""

    def __init__(self) -> None:
        self._torch_sampler = Sampler()

    def __call__(self, logits: mx.array, entries: Sequence[BatchEntry]) -> list[SampledToken]:
        # logits: [S, V] float32, one row per entry with sample=True
        if all(_is_plain_greedy(e) for e in entries):
            token_ids = mx.argmax(logits, axis=-1).tolist()  # [S]
            return [SampledToken(e.seq_id, int(t)) for e, t in zip(entries, token_ids, strict=False)]
        host_logits = torch.from_numpy(np.array(logits, copy=True))  # [S, V] float32
        return self._torch_sampler(host_logits, entries)
