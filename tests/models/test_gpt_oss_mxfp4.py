"""MXFP4: our dequantization equals transformers' on every expert tensor of the demo model."""

from __future__ import annotations

import pytest
import torch
from safetensors import safe_open

from tkr_embed.models.gpt_oss.mxfp4 import dequantize_mxfp4, quantize_mxfp4


def test_dequantization_equals_reference_on_every_expert_tensor(demo_model_dir):
    from transformers.integrations.mxfp4 import convert_moe_packed_tensors

    checked = 0
    with safe_open(str(demo_model_dir / "model.safetensors"), framework="pt") as f:
        for name in sorted(n for n in f.keys() if n.endswith("_blocks")):
            blocks, scales = f.get_tensor(name), f.get_tensor(name.replace("_blocks", "_scales"))
            for dtype in (torch.float32, torch.bfloat16):
                ours = dequantize_mxfp4(blocks, scales, dtype)  # [E, out, in]
                reference = convert_moe_packed_tensors(blocks, scales, dtype=dtype)  # [E, in, out]
                assert torch.equal(ours, reference.transpose(1, 2)), name
            checked += 1
    assert checked == 2 * 4  # gate_up and down of each of the 4 layers


def test_known_codes_decode_to_e2m1_values_times_scale():
    # byte 0x21: low nibble 1 (0.5) first, high nibble 2 (1.0); byte 0xF9: 9 (-0.5), 15 (-6.0)
    blocks = torch.zeros(1, 1, 16, dtype=torch.uint8)
    blocks[0, 0, 0], blocks[0, 0, 1] = 0x21, 0xF9
    scales = torch.tensor([[127 + 3]], dtype=torch.uint8)  # x 2**3
    values = dequantize_mxfp4(blocks, scales, torch.float32)[0]
    assert values[:4].tolist() == [4.0, 8.0, -4.0, -48.0]
    assert values[4:].abs().sum().item() == 0.0


def test_quantize_then_dequantize_is_exact_on_representable_values():
    codes = torch.tensor([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0, 6.0])
    weight = torch.cat([codes, codes.flip(0)]).repeat(3, 1) * torch.tensor([[0.25], [1.0], [64.0]])  # [3, 32]
    blocks, scales = quantize_mxfp4(weight)
    assert blocks.shape == (3, 1, 16) and scales.shape == (3, 1)
    assert torch.equal(dequantize_mxfp4(blocks, scales, torch.float32), weight)


def test_quantize_rounds_to_nearest_code_within_half_a_step():
    weight = torch.randn(4, 64, generator=torch.Generator().manual_seed(0))
    blocks, scales = quantize_mxfp4(weight)
    restored = dequantize_mxfp4(blocks, scales, torch.float32)
    step = torch.ldexp(torch.ones(4, 2), scales.int() - 127).repeat_interleave(32, dim=1)  # largest code gap: 2
    assert ((restored - weight).abs() <= step + 1e-6).all()


def test_mismatched_blocks_and_scales_are_rejected():
    with pytest.raises(ValueError, match="do not match"):
        dequantize_mxfp4(torch.zeros(2, 3, 16, dtype=torch.uint8), torch.zeros(2, 4, dtype=torch.uint8), torch.float32)
