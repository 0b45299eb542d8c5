"""A tiny gpt-oss checkpoint in exactly the Hub layout, with deterministic random weights (`tkr-embed demo-model
--random`): the engine tests' model, whose numbers matter and whose words do not. The trained demo model that
`make serve` answers with is `demo_trained.py`.

Four layers (sliding, full, sliding, full), hidden 64, 4 query / 2 KV heads of 16, 8 experts (top 4)
of width 64, a 16-token sliding window, YaRN scaled down from the real model, and the full 201,088
token vocabulary so the harmony tokenizer works with it. Experts are MXFP4 blocks/scales, all else bf16.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from safetensors.torch import save_file

from tkr_embed.models.gpt_oss.checkpoint import INDEX_FILE, SINGLE_FILE, tensor_specs
from tkr_embed.models.gpt_oss.config import GptOssConfig
from tkr_embed.models.gpt_oss.mxfp4 import random_mxfp4

# gpt-oss's YaRN rope scaling, over a 128-token original context: the demo checkpoints' (random and trained) own
DEMO_ROPE_SCALING = {
    "rope_type": "yarn",
    "factor": 32.0,
    "beta_fast": 32.0,
    "beta_slow": 1.0,
    "truncate": False,
    "original_max_position_embeddings": 128,
}

DEMO_CONFIG = GptOssConfig(
    vocab_size=201088,
    hidden_size=64,
    num_hidden_layers=4,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=16,
    num_local_experts=8,
    num_experts_per_tok=4,
    intermediate_size=64,
    sliding_window=16,
    rope_theta=150000.0,
    rope_scaling=dict(DEMO_ROPE_SCALING),
    max_position_embeddings=4096,
)

GENERATION_CONFIG = {
    "bos_token_id": 199998,
    "do_sample": True,
    "eos_token_id": [200002, 199999, 200012],
    "pad_token_id": 199999,
}


def demo_weight_std(name: str, config: GptOssConfig) -> tuple[float, float]:
    """(mean, std) of each demo tensor: unit-scale activations and logits of a few units' spread."""
    fan_in = config.hidden_size
    if name.endswith("layernorm.weight") or name == "model.norm.weight":
        return 1.0, 0.1
    if name == "model.embed_tokens.weight":
        return 0.0, 1.0
    if name == "lm_head.weight":
        return 0.0, 4.0 / math.sqrt(fan_in)
    if name.endswith("sinks"):
        return 0.0, 1.0
    if name.endswith("bias"):
        return 0.0, 0.05
    if name.endswith("o_proj.weight"):
        return 0.0, 1.0 / math.sqrt(config.num_attention_heads * config.head_dim)
    if name.endswith("down_proj"):
        return 0.0, 1.0 / math.sqrt(config.intermediate_size)
    return 0.0, 1.0 / math.sqrt(fan_in)


def demo_tensors(config: GptOssConfig, *, seed: int) -> dict[str, torch.Tensor]:
    """All checkpoint tensors, generated in name order from one seeded generator."""
    generator = torch.Generator().manual_seed(seed)
    tensors: dict[str, torch.Tensor] = {}
    specs = tensor_specs(config, experts_on_disk="mxfp4")
    for name in sorted(specs):
        spec = specs[name]
        if name.endswith("_scales"):
            continue  # made with their blocks
        if name.endswith("_blocks"):
            prefix = name.removesuffix("_blocks")
            *lead, groups, _ = spec.shape
            _, std = demo_weight_std(prefix, config)
            blocks, scales = random_mxfp4((*lead, groups * 32), std=std, generator=generator)
            tensors[name], tensors[prefix + "_scales"] = blocks, scales
            continue
        mean, std = demo_weight_std(name, config)
        values = torch.randn(spec.shape, generator=generator) * std + mean
        tensors[name] = values.to(torch.bfloat16)
    return tensors


def write_demo_checkpoint(out_dir: Path, *, num_shards: int = 1, seed: int = 0) -> Path:
    """Write config.json, generation_config.json and the weights (sharded when num_shards > 1)."""
    if num_shards < 1:
        raise ValueError("num_shards must be at least 1")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    config = DEMO_CONFIG
    (out_dir / "config.json").write_text(json.dumps(config.to_hf_dict(), indent=2) + "\n")
    (out_dir / "generation_config.json").write_text(json.dumps(GENERATION_CONFIG, indent=2) + "\n")
    tensors = demo_tensors(config, seed=seed)
    metadata = {"format": "pt"}
    if num_shards == 1:
        save_file(tensors, str(out_dir / SINGLE_FILE), metadata=metadata)
        return out_dir
    names = list(tensors)
    weight_map: dict[str, str] = {}
    per_shard = math.ceil(len(names) / num_shards)
    for shard in range(num_shards):
        file_name = f"model-{shard + 1:05d}-of-{num_shards:05d}.safetensors"
        part = {n: tensors[n] for n in names[shard * per_shard : (shard + 1) * per_shard]}
        save_file(part, str(out_dir / file_name), metadata=metadata)
        weight_map.update({n: file_name for n in part})
    total_size = sum(t.numel() * t.element_size() for t in tensors.values())
    index = {"metadata": {"total_size": total_size}, "weight_map": weight_map}
    (out_dir / INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n")
    return out_dir
