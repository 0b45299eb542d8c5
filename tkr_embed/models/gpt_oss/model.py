"""gpt-oss as a plain nn.Module serving a flat ragged batch over a paged KV cache.

Parameter names equal the checkpoint's tensor names (`model.layers.0.self_attn.q_proj.weight`, ...),
so loading is a name-for-name copy.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tkr_embed.backends.torch.attention import AttentionMetadata
from tkr_embed.models.gpt_oss.config import GptOssConfig
from tkr_embed.models.gpt_oss.layers import Attention, RMSNorm, RotaryEmbedding, empty_param
from tkr_embed.models.gpt_oss.moe import MoE


class DecoderLayer(nn.Module):
    def __init__(self, config: GptOssConfig, layer_idx: int, *, device, dtype, expert_format: str) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps, device=device, dtype=dtype)
        self.self_attn = Attention(config, layer_idx, device=device, dtype=dtype)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps, device=device, dtype=dtype)
        self.mlp = MoE(config, device=device, dtype=dtype, expert_format=expert_format)

    def forward(
        self,
        hidden: torch.Tensor,
        cos_sin: tuple[torch.Tensor, torch.Tensor],
        kv_cache: torch.Tensor,
        metadata: AttentionMetadata,
    ) -> torch.Tensor:
        hidden = hidden + self.self_attn(self.input_layernorm(hidden), cos_sin, kv_cache, metadata)
        return hidden + self.mlp(self.post_attention_layernorm(hidden))


class GptOssModel(nn.Module):
    def __init__(self, config: GptOssConfig, *, device, dtype, expert_format: str) -> None:
        super().__init__()
        self.embed_tokens = nn.Module()
        self.embed_tokens.weight = empty_param(config.vocab_size, config.hidden_size, device=device, dtype=dtype)
        self.layers = nn.ModuleList(
            DecoderLayer(config, i, device=device, dtype=dtype, expert_format=expert_format)
            for i in range(config.num_hidden_layers)
        )
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps, device=device, dtype=dtype)
        self.rotary = RotaryEmbedding(config, device=device)


class GptOssForCausalLM(nn.Module):
    def __init__(
        self, config: GptOssConfig, *, device: torch.device | str, dtype: torch.dtype, expert_format: str = "mxfp4"
    ) -> None:
        super().__init__()
        self.config = config
        self.dtype = dtype
        self.expert_format = expert_format
        self.model = GptOssModel(config, device=device, dtype=dtype, expert_format=expert_format)
        self.lm_head = nn.Module()
        self.lm_head.weight = empty_param(config.vocab_size, config.hidden_size, device=device, dtype=dtype)

    @property
    def device(self) -> torch.device:
        return self.lm_head.weight.device

    @torch.inference_mode()
    def forward(
        self,
        input_ids: torch.Tensor,            # [T] int64, the flat batch
        positions: torch.Tensor,            # [T] int64
        kv_caches: list[torch.Tensor],      # one [2, blocks, block_size, Hkv, D] per layer
        attn_metadata: AttentionMetadata,
    ) -> torch.Tensor:
        """Returns the final-normed hidden states [T, hidden]; pick rows, then `compute_logits`."""
        hidden = F.embedding(input_ids, self.model.embed_tokens.weight)          # [T, hidden]
        cos_sin = self.model.rotary.cos_sin(positions, self.dtype)               # [T, D/2] x2
        for layer, kv_cache in zip(self.model.layers, kv_caches, strict=True):
            hidden = layer(hidden, cos_sin, kv_cache, attn_metadata)
        return self.model.norm(hidden)

    @torch.inference_mode()
    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """[N, hidden] -> [N, vocab] float32."""
        return F.linear(hidden, self.lm_head.weight).float()
