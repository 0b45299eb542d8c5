"""MXFP4: blocks of 32 FP4 (e2m1) values sharing one E8M0 exponent, as gpt-oss checkpoints store experts.

Layout on disk, for a weight W[E, N, K] (N outputs, K inputs, `y = x @ W[e].T`):
  `*_blocks` uint8 [E, N, K // 32, 16]: two e2m1 codes a byte, the low nibble is the even element;
  `*_scales` uint8 [E, N, K // 32]: the block's exponent with bias 127, value = code * 2 ** (scale - 127).
"""

from __future__ import annotations

import torch

BLOCK_SIZE = 32  # values that share one scale
BYTES_PER_BLOCK = 16  # two 4-bit codes a byte
SCALE_BIAS = 127

# The 16 e2m1 codes: sign bit 3, then 2 exponent bits and 1 mantissa bit.
FP4_E2M1_VALUES = (
    0.0,
    0.5,
    1.0,
    1.5,
    2.0,
    3.0,
    4.0,
    6.0,
    -0.0,
    -0.5,
    -1.0,
    -1.5,
    -2.0,
    -3.0,
    -4.0,
    -6.0,
)


def _lut(device: torch.device) -> torch.Tensor:
    return torch.tensor(FP4_E2M1_VALUES, dtype=torch.float32, device=device)


def dequantize_mxfp4(blocks: torch.Tensor, scales: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """[..., N, K/32, 16] uint8 codes + [..., N, K/32] uint8 exponents -> [..., N, K] in `dtype`."""
    if blocks.dtype != torch.uint8 or scales.dtype != torch.uint8:
        raise TypeError("MXFP4 blocks and scales must be uint8")
    if blocks.shape[:-1] != scales.shape or blocks.shape[-1] != BYTES_PER_BLOCK:
        raise ValueError(f"MXFP4 blocks {tuple(blocks.shape)} do not match scales {tuple(scales.shape)}")
    lut = _lut(blocks.device)
    low = lut[(blocks & 0x0F).long()]  # [..., N, G, 16]
    high = lut[(blocks >> 4).long()]  # [..., N, G, 16]
    values = torch.stack((low, high), dim=-1).flatten(-2)  # [..., N, G, 32]
    exponents = scales.to(torch.int32) - SCALE_BIAS  # [..., N, G]
    values = torch.ldexp(values, exponents.unsqueeze(-1))  # exact in fp32
    return values.flatten(-2).to(dtype)  # [..., N, K]


def quantize_mxfp4(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """[..., N, K] float -> (blocks [..., N, K/32, 16] uint8, scales [..., N, K/32] uint8).

    Each block's scale is the smallest power of two that puts the block's largest magnitude within
    the FP4 range (6.0); each value then rounds to the nearest e2m1 code.
    """
    if weight.shape[-1] % BLOCK_SIZE != 0:
        raise ValueError(f"last dimension {weight.shape[-1]} is not a multiple of {BLOCK_SIZE}")
    w = weight.float().unflatten(-1, (-1, BLOCK_SIZE))  # [..., N, G, 32]
    amax = w.abs().amax(dim=-1).clamp_min(torch.finfo(torch.float32).tiny)
    exponents = torch.ceil(torch.log2(amax / 6.0)).clamp(-SCALE_BIAS, 127).to(torch.int32)
    scaled = torch.ldexp(w, -exponents.unsqueeze(-1))  # now |x| <= 6
    lut = _lut(w.device)[:8]  # non-negative codes
    codes = (scaled.abs().unsqueeze(-1) - lut).abs().argmin(dim=-1)  # [..., N, G, 32] in 0..7
    codes = codes + 8 * ((scaled < 0) & (codes > 0)).long()  # sign bit; never "-0"
    codes = codes.to(torch.uint8).unflatten(-1, (BYTES_PER_BLOCK, 2))  # [..., N, G, 16, 2]
    blocks = codes[..., 0] | (codes[..., 1] << 4)
    scales = (exponents + SCALE_BIAS).to(torch.uint8)
    return blocks.contiguous(), scales.contiguous()


def random_mxfp4(
    shape: tuple[int, ...], *, std: float, generator: torch.Generator | None = None, device: torch.device | str = "cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random MXFP4 weights of logical shape [..., N, K] whose values have roughly standard deviation `std`."""
    *prefix, n, k = shape
    blocks = torch.randint(
        0, 256, (*prefix, n, k // BLOCK_SIZE, BYTES_PER_BLOCK), dtype=torch.uint8, generator=generator, device=device
    )
    # Uniform codes have std ~2.9; one shared exponent per tensor brings them to about `std`.
    exponent = round(torch.log2(torch.tensor(std / 2.9)).item())
    scales = torch.full((*prefix, n, k // BLOCK_SIZE), SCALE_BIAS + exponent, dtype=torch.uint8, device=device)
    return blocks, scales
