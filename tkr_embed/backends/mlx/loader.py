"""Load a gpt-oss checkpoint folder into MlxGptOss through our CheckpointReader, tensor by tensor.

`bits` (8 or 4) quantizes attention projections, the embedding and the unembedding with MLX affine
quantization; None keeps them in `dtype`. Experts always stay MXFP4; the router, norms, sinks and
biases stay in `dtype` (float32 for the sinks).
"""

from __future__ import annotations

from dataclasses import fields, is_dataclass
from pathlib import Path

import mlx.core as mx

from tkr_embed.backends.mlx.model import AttentionWeights, DecoderLayerWeights, MlxGptOss
from tkr_embed.backends.mlx.weights import Linear, Mxfp4Experts, maybe_quantize, to_mlx
from tkr_embed.models.gpt_oss.checkpoint import CheckpointError, CheckpointReader, validate
from tkr_embed.models.gpt_oss.config import ConfigError, GptOssConfig
from tkr_embed.models.gpt_oss.layers import yarn_inv_freq


def load_mlx_model(path: str | Path, *, dtype: mx.Dtype, bits: int | None) -> MlxGptOss:
    """Raises CheckpointError naming the file (and tensor) for any problem with the folder."""
    folder = Path(path)
    try:
        config = GptOssConfig.from_pretrained(folder)
    except ConfigError as exc:
        raise CheckpointError(str(exc)) from exc
    with CheckpointReader(folder) as reader:
        experts_on_disk = validate(reader, config)

        def tensor(name: str) -> mx.array:
            return to_mlx(reader.read(name), dtype)

        def linear(prefix: str, *, quantize: bool) -> Linear:
            weight = tensor(prefix + ".weight")
            bias_name = prefix + ".bias"
            bias = tensor(bias_name) if bias_name in reader.weight_map else None
            return Linear(maybe_quantize(weight, bits if quantize else None), bias)

        def experts(prefix: str) -> Mxfp4Experts:
            if experts_on_disk == "mxfp4":
                gate_up = (
                    Mxfp4Experts.words_from_blocks(reader.read(prefix + "gate_up_proj_blocks")),
                    to_mlx(reader.read(prefix + "gate_up_proj_scales")),
                )
                down = (
                    Mxfp4Experts.words_from_blocks(reader.read(prefix + "down_proj_blocks")),
                    to_mlx(reader.read(prefix + "down_proj_scales")),
                )
            else:  # dense on disk: [E, in, out]
                gate_up = Mxfp4Experts.from_dense(tensor(prefix + "gate_up_proj").transpose(0, 2, 1))
                down = Mxfp4Experts.from_dense(tensor(prefix + "down_proj").transpose(0, 2, 1))
            return Mxfp4Experts(
                gate_up_words=gate_up[0],
                gate_up_scales=gate_up[1],
                gate_up_bias=tensor(prefix + "gate_up_proj_bias"),
                down_words=down[0],
                down_scales=down[1],
                down_bias=tensor(prefix + "down_proj_bias"),
            )

        layers = []
        for i in range(config.num_hidden_layers):
            p = f"model.layers.{i}."
            layer = DecoderLayerWeights(
                input_layernorm=tensor(p + "input_layernorm.weight"),
                post_attention_layernorm=tensor(p + "post_attention_layernorm.weight"),
                attention=AttentionWeights(
                    q_proj=linear(p + "self_attn.q_proj", quantize=True),
                    k_proj=linear(p + "self_attn.k_proj", quantize=True),
                    v_proj=linear(p + "self_attn.v_proj", quantize=True),
                    o_proj=linear(p + "self_attn.o_proj", quantize=True),
                    sinks=to_mlx(reader.read(p + "self_attn.sinks"), mx.float32),
                ),
                router=linear(p + "mlp.router", quantize=False),
                experts=experts(p + "mlp.experts."),
            )
            mx.eval(_arrays(layer))  # materialise now: the reader's mapped tensors can go
            layers.append(layer)
        embed_tokens = Linear(maybe_quantize(tensor("model.embed_tokens.weight"), bits))
        lm_head = Linear(maybe_quantize(tensor("lm_head.weight"), bits))
        norm = tensor("model.norm.weight")
        mx.eval(_arrays(embed_tokens), _arrays(lm_head), norm)
    inv_freq, rope_scale = yarn_inv_freq(config)
    return MlxGptOss(
        config,
        embed_tokens=embed_tokens,
        layers=layers,
        norm=norm,
        lm_head=lm_head,
        inv_freq=to_mlx(inv_freq),
        rope_scale=rope_scale,
        dtype=dtype,
    )


def _arrays(value: object) -> list[mx.array]:
    """Every MLX array inside nested weight dataclasses."""
    if isinstance(value, mx.array):
        return [value]
    if is_dataclass(value):
        return [a for f in fields(value) for a in _arrays(getattr(value, f.name))]
    return []
