"""Triton MXFP4 mixture-of-experts: experts stay 4-bit in memory and are dequantized on the fly.

Which kernels run depends on the batch, each range going to the kernels fastest there on an H200:
- up to GEMV_MAX_TOKENS tokens: matrix-vector kernels, one program per (pair, column tile)
  (`mxfp4_gemv`);
- MMA_MIN_TOKENS..MMA_MAX_TOKENS on CUDA, when the caller says fp16 holds the layer (`allow_mma`): weights
  dequantized straight into mma.sync registers (`mxfp4_moe_mma`, Gluon);
- up to DECODE_MAX_TOKENS: expert-major tensor-core kernels that find their own pairs
  (`mxfp4_moe_decode`);
- more: grouped GEMMs over pairs sorted by expert (`mxfp4_moe_grouped`), 64-row blocks up to
  2,048 tokens, 128-row blocks above;
- from PREFILL_DEQUANT_MIN_TOKENS tokens on CUDA: the experts dequantized once, then torch's grouped
  GEMM (`mxfp4_moe_prefill`).

All return per-pair results [T, k, D] with the routing weight applied ([T, k * down_splits, D] when the
matrix-vector down projection is split over K); the model sums the slots with the residual inside the
next RMSNorm (`fused_ops.add_rms_norm` given the [T, k, D] results). `mxfp4_moe` sums
them here for callers that want [T, D].
"""

from __future__ import annotations

import torch

from tkr_embed.backends.torch.kernels.moe_weights import MoeWeights
from tkr_embed.backends.torch.kernels.mxfp4_gemv import GemvConfig, mxfp4_moe_gemv
from tkr_embed.backends.torch.kernels.mxfp4_moe_decode import (
    DECODE_MAX_PAIRS,
    DecodeTileConfig,
    default_decode_config,
    mxfp4_moe_decode_partials,
)
from tkr_embed.backends.torch.kernels.mxfp4_moe_grouped import (
    GroupedTileConfig,
    default_grouped_config,
    mxfp4_moe_grouped_partials,
)
from tkr_embed.backends.torch.kernels.mxfp4_moe_mma import (
    MmaTileConfig,
    default_mma_config,
    mxfp4_moe_mma_partials,
    supports,
)
from tkr_embed.backends.torch.kernels.mxfp4_moe_prefill import SortedPairRows, mxfp4_moe_prefill_rows
from tkr_embed.backends.torch.kernels.mxfp4_tile import use_asm

GEMV_MAX_TOKENS = 16
DECODE_MAX_TOKENS = 32
# From this many tokens (CUDA): experts dequantized once, then grouped GEMMs (`mxfp4_moe_prefill`); None: off.
# One layer, ms, grouped kernels / this path. H200: 1,024 tokens 1.200 / 1.588,
# 2,048 1.878 / 1.756, 4,096 2.929 / 2.330, 8,192 5.419 / 3.645. H100: 2,048 1.901 / 1.975, 8,192
# 6.462 / 4.014. From 4,096 it is faster on both cards.
PREFILL_DEQUANT_MIN_TOKENS: int | None = 4096
# The register-operand MMA kernels (CUDA, allow_mma). One layer, H100, ms, the
# dispatch without them / with them: 16 tokens 0.327 / 0.222, 24 0.364 / 0.232, 32 0.389 / 0.240,
# 64 0.374 / 0.263, 128 0.448 / 0.391, 192 0.453 / 0.467, 256 0.459 / 0.552. 128 experts (120b), H200:
# 16 tokens 0.341 / 0.281, 64 tokens 1.169 / 0.617 with 8-token blocks (0.679 with 16).
MMA_MIN_TOKENS = 16
MMA_MAX_TOKENS = 128


MoeConfig = GemvConfig | DecodeTileConfig | GroupedTileConfig | MmaTileConfig


def uses_fp16_hidden(num_tokens: int, allow_mma: bool) -> bool:
    """Whether the default dispatch may run the MMA kernels, whose operand is an fp16 copy of the hidden states
    (`hidden_f16`; the model's residual norm writes it beside its output)."""
    return allow_mma and MMA_MIN_TOKENS <= num_tokens <= MMA_MAX_TOKENS


def default_config(num_tokens: int, top_k: int) -> MoeConfig:
    if num_tokens <= GEMV_MAX_TOKENS:
        return GemvConfig()
    if num_tokens <= DECODE_MAX_TOKENS and num_tokens * top_k <= DECODE_MAX_PAIRS:
        return default_decode_config(num_tokens * top_k)
    return default_grouped_config(num_tokens)


def mxfp4_moe_partials(
    hidden: torch.Tensor,  # [T, D] bf16
    topk_ids: torch.Tensor,  # [T, k] int
    topk_weights: torch.Tensor,  # [T, k] float
    weights: MoeWeights,  # the layer's experts
    config: MoeConfig | None = None,
    allow_mma: bool = False,
    tiled: bool = False,
    hidden_f16: torch.Tensor | None = None,
    pair_rows: bool = False,
) -> torch.Tensor | SortedPairRows:
    """Experts forward on the GPU with MXFP4 weights -> per-pair results [T, k, D] in hidden's dtype
    ([T, k * down_splits, D] for a GemvConfig with down_splits > 1).

    allow_mma: the caller has checked that these weights and inputs are exact in fp16
    (`mxfp4_moe_mma.scale_bytes_fit`, `normed_inputs_fit`), so the MMA kernels may serve
    MMA_MIN_TOKENS..MMA_MAX_TOKENS tokens.
    tiled: the blocks and scales are in 16-row tiles (`expert_layout.tile_in_place`), as the model keeps them
    on CUDA when their shape allows.
    hidden_f16: hidden in fp16 when the caller has it (the MMA kernels' operand, see `uses_fp16_hidden`).
    pair_rows: the caller takes the prefill path's rows sorted by expert as they are (`SortedPairRows`, which
    `fused_ops.add_rms_norm` sums), instead of per-pair results written back in pair order.
    """
    num_tokens = hidden.shape[0]
    if (
        config is None
        and hidden.is_cuda
        and PREFILL_DEQUANT_MIN_TOKENS is not None
        and num_tokens >= PREFILL_DEQUANT_MIN_TOKENS
    ):
        rows = mxfp4_moe_prefill_rows(hidden, topk_ids, topk_weights, weights, tiled=tiled)
        return rows if pair_rows else rows.materialize()
    if (
        config is None
        and uses_fp16_hidden(num_tokens, allow_mma)
        and use_asm(hidden)
        and supports(hidden.shape[1], weights.intermediate_size)
    ):
        config = default_mma_config(num_tokens * topk_ids.shape[1], weights.num_experts)
    cfg = config or default_config(num_tokens, topk_ids.shape[1])
    if isinstance(cfg, MmaTileConfig):
        return mxfp4_moe_mma_partials(
            hidden, topk_ids, topk_weights, weights, config=cfg, tiled=tiled, hidden_f16=hidden_f16
        )
    if isinstance(cfg, GemvConfig):
        return mxfp4_moe_gemv(hidden, topk_ids, topk_weights, weights, config=cfg, tiled=tiled)
    if isinstance(cfg, DecodeTileConfig):
        return mxfp4_moe_decode_partials(hidden, topk_ids, topk_weights, weights, config=cfg, tiled=tiled)
    return mxfp4_moe_grouped_partials(hidden, topk_ids, topk_weights, weights, config=cfg, tiled=tiled)


def mxfp4_moe(
    hidden: torch.Tensor,
    topk_ids: torch.Tensor,
    topk_weights: torch.Tensor,
    weights: MoeWeights,
    config: MoeConfig | None = None,
    residual: torch.Tensor | None = None,  # [T, D]: added to the result when given
    allow_mma: bool = False,
    tiled: bool = False,
) -> torch.Tensor:
    """The k slots summed (+ residual) -> [T, D] in hidden's dtype."""
    summed = mxfp4_moe_partials(
        hidden, topk_ids, topk_weights, weights, config=config, allow_mma=allow_mma, tiled=tiled
    ).sum(dim=1, dtype=torch.float32)
    if residual is not None:
        summed += residual
    return summed.to(hidden.dtype)
