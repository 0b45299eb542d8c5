"""gpt-oss on MLX serving a flat ragged batch over the paged KV cache (mirrors models/gpt_oss/model.py)."""

from __future__ import annotations

from dataclasses import dataclass

import mlx.core as mx

from tkr_embed.backends.mlx.attention import MlxAttentionMetadata, PagedKVCache, paged_attention
from tkr_embed.backends.mlx.weights import Linear, Mxfp4Experts
from tkr_embed.models.gpt_oss.config import GptOssConfig


@dataclass
class AttentionWeights:
    q_proj: Linear
    k_proj: Linear
    v_proj: Linear
    o_proj: Linear
    sinks: mx.array  # [Hq], float32


@dataclass
class DecoderLayerWeights:
    input_layernorm: mx.array  # [H]
    post_attention_layernorm: mx.array  # [H]
    attention: AttentionWeights
    router: Linear  # [E, H] + bias [E], kept in the model dtype
    experts: Mxfp4Experts


def apply_rotary(x: mx.array, cos: mx.array, sin: mx.array) -> mx.array:
    """x [T, H, D]; cos, sin [T, D/2]: rotate the two halves of each head (not interleaved)."""
    half = x.shape[-1] // 2
    first, second = x[..., :half], x[..., half:]  # [T, H, D/2] each
    cos, sin = cos[:, None, :], sin[:, None, :]  # [T, 1, D/2]
    return mx.concatenate((first * cos - second * sin, second * cos + first * sin), axis=-1)


class MlxGptOss:
    """The whole model as arrays; `forward` returns final-normed hidden states, `compute_logits` logits."""

    def __init__(
        self,
        config: GptOssConfig,
        *,
        embed_tokens: Linear,
        layers: list[DecoderLayerWeights],
        norm: mx.array,
        lm_head: Linear,
        inv_freq: mx.array,  # [D/2] float32, YaRN-scaled
        rope_scale: float,
        dtype: mx.Dtype,
    ) -> None:
        self.config = config
        self.embed_tokens = embed_tokens
        self.layers = layers
        self.norm = norm
        self.lm_head = lm_head
        self.inv_freq = inv_freq
        self.rope_scale = rope_scale
        self.dtype = dtype
        self.sliding_windows = [config.layer_sliding_window(i) for i in range(config.num_hidden_layers)]
        self.scale = config.head_dim**-0.5

    def _attention(
        self,
        index: int,
        weights: AttentionWeights,
        hidden: mx.array,
        cos: mx.array,
        sin: mx.array,
        cache: PagedKVCache,
        metadata: MlxAttentionMetadata,
    ) -> mx.array:
        config = self.config
        num_tokens = hidden.shape[0]
        q = weights.q_proj(hidden).reshape(num_tokens, config.num_attention_heads, config.head_dim)  # [T, Hq, D]
        k = weights.k_proj(hidden).reshape(num_tokens, config.num_key_value_heads, config.head_dim)  # [T, Hkv, D]
        v = weights.v_proj(hidden).reshape(num_tokens, config.num_key_value_heads, config.head_dim)  # [T, Hkv, D]
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        cache.write(index, k, v, metadata.slot_mapping)
        out = paged_attention(
            q, cache, index, weights.sinks, metadata, scale=self.scale, sliding_window=self.sliding_windows[index]
        )  # [T, Hq, D]
        return weights.o_proj(out.reshape(num_tokens, -1))  # [T, hidden]

    def _moe(self, layer: DecoderLayerWeights, hidden: mx.array) -> mx.array:
        top_k = self.config.num_experts_per_tok
        router_logits = layer.router(hidden)  # [T, E]
        topk_ids = mx.argpartition(-router_logits, kth=top_k - 1, axis=-1)[:, :top_k]  # [T, k]
        topk_logits = mx.take_along_axis(router_logits, topk_ids, axis=-1)
        topk_weights = mx.softmax(topk_logits.astype(mx.float32), axis=-1)  # [T, k]
        return layer.experts(
            hidden, topk_ids.astype(mx.uint32), topk_weights, self.config.swiglu_limit, self.config.swiglu_alpha
        )

    def forward(
        self, input_ids: mx.array, positions: mx.array, cache: PagedKVCache, metadata: MlxAttentionMetadata
    ) -> mx.array:
        """input_ids, positions [T] -> final-normed hidden states [T, hidden]; writes every layer's KV."""
        eps = self.config.rms_norm_eps
        hidden = self.embed_tokens.rows(input_ids).astype(self.dtype)  # [T, hidden]
        freqs = positions.astype(mx.float32)[:, None] * self.inv_freq  # [T, D/2]
        cos = (mx.cos(freqs) * self.rope_scale).astype(self.dtype)
        sin = (mx.sin(freqs) * self.rope_scale).astype(self.dtype)
        for index, layer in enumerate(self.layers):
            normed = mx.fast.rms_norm(hidden, layer.input_layernorm, eps)
            hidden = hidden + self._attention(index, layer.attention, normed, cos, sin, cache, metadata)
            normed = mx.fast.rms_norm(hidden, layer.post_attention_layernorm, eps)
            hidden = hidden + self._moe(layer, normed)
        return mx.fast.rms_norm(hidden, self.norm, eps)

    def compute_logits(self, hidden: mx.array) -> mx.array:
        """[N, hidden] -> [N, vocab] float32."""
        return self.lm_head(hidden).astype(mx.float32)
