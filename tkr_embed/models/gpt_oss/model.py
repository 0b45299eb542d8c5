"""gpt-oss as a plain nn.Module serving a flat ragged batch over a paged KV cache.

Parameter names equal the checkpoint's tensor names (`model.layers.0.self_attn.q_proj.weight`, ...),
so loading is a name-for-name copy.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tkr_embed.backends.torch.attention import AttentionMetadata
from tkr_embed.backends.torch.dispatch import use_kernels
from tkr_embed.models.gpt_oss.config import GptOssConfig
from tkr_embed.models.gpt_oss.layers import Attention, RMSNorm, RotaryEmbedding, empty_param
from tkr_embed.models.gpt_oss.moe import MoE

# CUDA decode batches: the residual norm also writes its output in fp16 for the MMA experts (one conversion
# launch a layer fewer; an A/B switch)
NORM_WRITES_FP16 = True


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
        self.kernels_ready = False
        self.moe_mma_exact = False  # the MoE's fp16 MMA kernels hold every weight and input exactly

    def prepare_kernels(self) -> None:
        """CUDA: fuse each layer's q/k/v weights so the fused-kernel forward can run (no extra memory), put the
        MXFP4 experts in the kernels' 16-row tiles (in place), and read the experts' scale bytes once: which
        MoE kernels are exact for them.

        Raises ValueError for MXFP4 scale bytes above 2^113, which the kernels' dequantization cannot hold.
        """
        from tkr_embed.backends.torch.kernels.mxfp4_moe_mma import normed_inputs_fit, scale_bytes_fit
        from tkr_embed.backends.torch.kernels.mxfp4_tile import EXACT_SCALE_MAX, scale_byte_range

        for layer in self.model.layers:
            layer.self_attn.fuse_qkv()
            if self.device.type == "cuda":
                layer.mlp.experts.tile_for_kernels()
        if self.expert_format == "mxfp4":
            smallest, largest = scale_byte_range(
                *(
                    t
                    for layer in self.model.layers
                    for t in (layer.mlp.experts.gate_up_proj_scales, layer.mlp.experts.down_proj_scales)
                )
            )
            if largest > EXACT_SCALE_MAX:
                raise ValueError(
                    f"MXFP4 scale byte {largest} (2^{largest - 127}) exceeds the CUDA kernels' "
                    f"limit of {EXACT_SCALE_MAX}"
                )
            norm_max = max(float(layer.post_attention_layernorm.weight.abs().max()) for layer in self.model.layers)
            self.moe_mma_exact = scale_bytes_fit(smallest, largest) and normed_inputs_fit(
                norm_max, self.config.hidden_size
            )
        self.kernels_ready = self.expert_format == "mxfp4"

    @property
    def device(self) -> torch.device:
        return self.lm_head.weight.device

    @torch.inference_mode()
    def forward(
        self,
        input_ids: torch.Tensor,  # [T] int64, the flat batch
        positions: torch.Tensor,  # [T] int64
        kv_caches: list[torch.Tensor],  # one [2, blocks, block_size, Hkv, D] per layer
        attn_metadata: AttentionMetadata,
    ) -> torch.Tensor:
        """Returns the final-normed hidden states [T, hidden]; pick rows, then `compute_logits`."""
        if self.kernels_ready and use_kernels(input_ids):
            return self._forward_kernels(input_ids, positions, kv_caches, attn_metadata)
        hidden = F.embedding(input_ids, self.model.embed_tokens.weight)  # [T, hidden]
        cos_sin = self.model.rotary.cos_sin(positions, self.dtype)  # [T, D/2] x2
        for layer, kv_cache in zip(self.model.layers, kv_caches, strict=True):
            hidden = layer(hidden, cos_sin, kv_cache, attn_metadata)
        return self.model.norm(hidden)

    def _forward_kernels(
        self,
        input_ids: torch.Tensor,
        positions: torch.Tensor,
        kv_caches: list[torch.Tensor],
        attn_metadata: AttentionMetadata,
    ) -> torch.Tensor:
        """The same function as forward through fused Triton kernels: ~10 launches a layer.

        Residual stream: norm(x) feeds attention; residual + attn (+ o bias) is normed in one kernel, which
        also writes the fp16 copy the MMA experts multiply (decode batches); router top-k in one kernel; the
        MoE's k per-pair results are summed with the residual inside the next RMSNorm (for prefill batches it
        reads them where the experts' GEMM left them, sorted by expert).
        """
        from tkr_embed.backends.torch.kernels.fused_ops import add_rms_norm, rms_norm, router_topk
        from tkr_embed.backends.torch.kernels.mxfp4_moe import mxfp4_moe_partials, uses_fp16_hidden

        eps = self.config.rms_norm_eps
        layers = self.model.layers
        residual = F.embedding(input_ids, self.model.embed_tokens.weight)  # [T, hidden]
        cos_sin = self.model.rotary.cos_sin(positions, self.dtype)  # [T, D/2] x2
        x = rms_norm(residual, layers[0].input_layernorm.weight, eps)
        # one buffer for every layer's fp16 copy (each layer's experts read it before the next norm writes it)
        x16 = (
            torch.empty(residual.shape, dtype=torch.float16, device=residual.device)
            if NORM_WRITES_FP16 and uses_fp16_hidden(input_ids.shape[0], self.moe_mma_exact)
            else None
        )
        for index, (layer, kv_cache) in enumerate(zip(layers, kv_caches, strict=True)):
            attn = layer.self_attn.forward_kernels(x, cos_sin, kv_cache, attn_metadata)  # [T, hidden]
            x, residual = add_rms_norm(
                attn,
                residual,
                layer.post_attention_layernorm.weight,
                eps,
                bias=layer.self_attn.o_proj.bias,
                out_f16=x16,
            )
            router, experts = layer.mlp.router, layer.mlp.experts
            topk_ids, topk_weights = router_topk(x, router.weight, router.bias, router.top_k)
            partials = mxfp4_moe_partials(
                x,
                topk_ids,
                topk_weights,
                experts.kernel_weights(),  # [T, k, hidden] or rows
                allow_mma=self.moe_mma_exact,
                tiled=experts.tiled,
                hidden_f16=x16,
                pair_rows=True,
            )
            next_norm = layers[index + 1].input_layernorm if index + 1 < len(layers) else self.model.norm
            x, residual = add_rms_norm(partials, residual, next_norm.weight, eps)
        return x

    @torch.inference_mode()
    def compute_logits(self, hidden: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """[N, hidden] -> [N, vocab] float32, written into `out` [N, vocab] float32 when given (the decode graphs
        of every batch size share one output buffer)."""
        logits = F.linear(hidden, self.lm_head.weight)  # [N, V] in the model dtype
        return logits.float() if out is None else out.copy_(logits)
