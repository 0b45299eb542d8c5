"""Random weights of any gpt-oss shape built directly on a device (no files), for benchmarks."""

from __future__ import annotations

import torch

from tkr_embed.models.gpt_oss.config import GptOssConfig
from tkr_embed.models.gpt_oss.demo import demo_weight_std
from tkr_embed.models.gpt_oss.model import GptOssForCausalLM
from tkr_embed.models.gpt_oss.mxfp4 import SCALE_BIAS


def build_random_model(
    config: GptOssConfig,
    *,
    device: torch.device | str,
    dtype: torch.dtype = torch.bfloat16,
    expert_format: str = "mxfp4",
    seed: int = 0,
) -> GptOssForCausalLM:
    """A model whose every parameter is seeded random data of the demo checkpoint's scales."""
    model = GptOssForCausalLM(config, device=device, dtype=dtype, expert_format=expert_format)
    generator = torch.Generator(device=model.device).manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("_blocks"):
                param.random_(0, 256, generator=generator)  # uniform e2m1 codes, std ~2.9
            elif name.endswith("_scales"):
                _, std = demo_weight_std(name.removesuffix("_scales"), config)
                exponent = round(torch.log2(torch.tensor(std / 2.9)).item())
                param.fill_(SCALE_BIAS + exponent)
            else:
                mean, std = demo_weight_std(name, config)
                param.normal_(mean, std, generator=generator)
    model.eval()
    return model
