"""Load a gpt-oss checkpoint folder into GptOssForCausalLM, streaming tensor by tensor.

The model is created with uninitialised parameters on the target device, then each checkpoint tensor
is read from the memory-mapped file and copied into its parameter: at most one tensor is ever held
besides the model itself.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import torch

from tkr_embed.models.gpt_oss.checkpoint import CheckpointError, CheckpointReader, validate
from tkr_embed.models.gpt_oss.config import ConfigError, GptOssConfig
from tkr_embed.models.gpt_oss.model import GptOssForCausalLM
from tkr_embed.models.gpt_oss.mxfp4 import dequantize_mxfp4, quantize_mxfp4

__all__ = ["CheckpointError", "load_model", "estimate_model_bytes"]

QUANTIZATIONS = ("mxfp4", "none")


def estimate_model_bytes(config: GptOssConfig, *, dtype: torch.dtype, expert_format: str) -> int:
    """Bytes the loaded weights take on the device."""
    itemsize = torch.empty((), dtype=dtype).element_size()
    hidden, inter, experts = config.hidden_size, config.intermediate_size, config.num_local_experts
    expert_values = experts * (2 * inter * hidden + hidden * inter)
    expert_bytes = expert_values * 17 // 32 if expert_format == "mxfp4" else expert_values * itemsize
    attn = (config.num_attention_heads + 2 * config.num_key_value_heads) * config.head_dim * hidden * 2
    per_layer_dense = attn + experts * (hidden + 1 + 3 * inter + hidden) + 4 * hidden
    dense = 2 * config.vocab_size * hidden + config.num_hidden_layers * per_layer_dense + hidden
    return dense * itemsize + config.num_hidden_layers * expert_bytes


def load_model(
    path: str | Path,
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.bfloat16,
    quantization: str = "mxfp4",
    verbose: bool = True,
) -> GptOssForCausalLM:
    """Load config.json, generation_config.json and the safetensors weights of a gpt-oss folder.

    quantization "mxfp4" keeps the experts as MXFP4 blocks/scales; "none" dequantizes them to `dtype`.
    Raises CheckpointError naming the file (and tensor) for any problem with the folder.
    """
    if quantization not in QUANTIZATIONS:
        raise ValueError(f"quantization must be one of {QUANTIZATIONS}, not {quantization!r}")
    folder = Path(path)
    try:
        config = GptOssConfig.from_pretrained(folder)
    except ConfigError as exc:
        raise CheckpointError(str(exc)) from exc
    expert_format = "mxfp4" if quantization == "mxfp4" else "dense"
    with CheckpointReader(folder) as reader:
        experts_on_disk = validate(reader, config)
        if verbose:
            estimate = estimate_model_bytes(config, dtype=dtype, expert_format=expert_format)
            print(
                f"loading {folder} ({reader.total_bytes() / 2**30:.2f} GiB on disk) to {device} as {dtype}, "
                f"experts {expert_format}: about {estimate / 2**30:.2f} GiB of weights",
                file=sys.stderr,
            )
        model = GptOssForCausalLM(config, device=device, dtype=dtype, expert_format=expert_format)
        params = dict(model.named_parameters())
        for name in _progress(list(reader.weight_map), enabled=verbose):
            for target, expert, value in _converted(reader, name, experts_on_disk, expert_format, dtype):
                destination = params[target].data
                (destination if expert is None else destination[expert]).copy_(value)
    model.eval()
    return model


def _converted(
    reader: CheckpointReader, name: str, experts_on_disk: str, expert_format: str, dtype: torch.dtype
) -> Iterator[tuple[str, int | None, torch.Tensor]]:
    """(parameter name, expert index or None for the whole tensor, value) that checkpoint tensor `name` fills."""
    if experts_on_disk == "mxfp4" and expert_format == "dense":
        if name.endswith("_scales"):
            return  # read together with its blocks
        if name.endswith("_blocks"):
            prefix = name.removesuffix("_blocks")
            blocks, scales = reader.read(name), reader.read(prefix + "_scales")
            for expert in range(blocks.shape[0]):  # one expert at a time bounds the temporaries
                yield prefix, expert, dequantize_mxfp4(blocks[expert], scales[expert], dtype)  # [out, in]
            return
    if experts_on_disk == "dense" and name.endswith(("experts.gate_up_proj", "experts.down_proj")):
        weight = reader.read(name).transpose(-1, -2)  # [E, in, out] -> [E, out, in]
        if expert_format == "dense":
            yield name, None, weight
            return
        blocks, scales = quantize_mxfp4(weight)
        yield name + "_blocks", None, blocks
        yield name + "_scales", None, scales
        return
    yield name, None, reader.read(name)


def _progress(names: list[str], *, enabled: bool):
    if enabled and sys.stderr.isatty():
        try:
            from tqdm import tqdm
        except ImportError:
            return names
        return tqdm(names, desc="loading weights", unit="tensor", file=sys.stderr)
    return names
