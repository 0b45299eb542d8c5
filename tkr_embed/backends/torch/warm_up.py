"""Compile a CUDA runner's kernels before it serves.

Triton compiles a kernel the first time a shape of launch meets it (about a second each on a machine
whose kernel cache is empty), so without this the first requests of each size wait for compiles, and
every stream running beside them stalls as long. Which kernels a step launches depends on its token
count (the MoE dispatch in `kernels/mxfp4_moe.py`), so one eager forward of a sequence of each count
below compiles them all: the matrix-vector experts, the expert-major decode kernels (which serve where
the MMA ones may not), the MMA experts, the grouped experts in 64- and 128-row blocks, and the prefill
path (experts dequantized once) at the largest step; every forward also meets the prefill attention
of both layer kinds. The decode step's kernels are compiled when its CUDA graphs are captured, and the
constrained steps' mask kernel (`token_mask.py`) on one row at the vocabulary's width. The
largest step also leaves its activation blocks in the caching allocator. Each kind of draw is sampled once
(`warm_up_sampler`), so the first request sampled at a temperature does not wait for the random generator's
set-up, torch's kernels loading on first use and the page-locked staging.
"""

from __future__ import annotations

import torch

from tkr_embed.backends.torch.kernels import mxfp4_moe
from tkr_embed.backends.torch.kernels.mxfp4_moe_grouped import GROUPED_64_MAX_TOKENS
from tkr_embed.backends.torch.sampler import Sampler
from tkr_embed.engine.runner import BatchEntry
from tkr_embed.engine.sampling_params import SamplingParams

SAMPLER_WARM_UP = (
    SamplingParams(temperature=0.0),
    SamplingParams(temperature=1.0),
    SamplingParams(temperature=1.0, seed=0),
    SamplingParams(temperature=0.7, top_p=0.9, top_k=40, min_p=0.05, logprobs=1),
    SamplingParams(temperature=0.0, repetition_penalty=1.1, presence_penalty=0.1, frequency_penalty=0.1),
)


def warm_up_token_counts(max_step_tokens: int, capacity: int) -> list[int]:
    """One token count per MoE kernel family a step of at most `max_step_tokens` can use, each at most
    `capacity` (the tokens the KV cache and the model's context hold for one sequence)."""
    wanted = [
        mxfp4_moe.GEMV_MAX_TOKENS // 2,
        (mxfp4_moe.GEMV_MAX_TOKENS + mxfp4_moe.DECODE_MAX_TOKENS) // 2,
        (mxfp4_moe.MMA_MIN_TOKENS + mxfp4_moe.MMA_MAX_TOKENS) // 2,
        GROUPED_64_MAX_TOKENS // 2,
        GROUPED_64_MAX_TOKENS + 1000,
        max_step_tokens,
    ]
    return sorted({min(count, max_step_tokens, capacity) for count in wanted if count >= 1})


def warm_up_sampler(sampler: Sampler, vocab_size: int, device: torch.device) -> None:
    """Each SAMPLER_WARM_UP kind sampled alone, then all together, on zero logits."""
    for kinds in [[kind] for kind in SAMPLER_WARM_UP] + [list(SAMPLER_WARM_UP)]:
        entries = [BatchEntry(-1, [0], 0, [0], True, kind, output_token_ids=(1, 1)) for kind in kinds]
        sampler.sample(torch.zeros(len(kinds), vocab_size, device=device), entries)
    sampler.release(-1)
