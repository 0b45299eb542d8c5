"""Pick and build a model runner for a device."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tkr_embed.engine.runner import ModelRunner

QUANTIZATION_ALIASES = {"auto": "mxfp4", "q4": "mxfp4", "mxfp4": "mxfp4", "none": "none"}
RANDOM_WEIGHT_MODELS = ("gpt-oss-20b", "gpt-oss-120b")


class DeviceUnavailableError(RuntimeError):
    """The requested device is not present (or no backend serves it yet)."""


def resolve_device(device: str) -> str:
    """'auto' -> 'cuda' when available, else 'cpu'; 'gpu' is an alias of 'cuda'."""
    import torch

    name = device.lower()
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "gpu":
        name = "cuda"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise DeviceUnavailableError(f"device {device!r} was asked for but CUDA is not available here")
        return name
    if name == "cpu":
        return name
    raise DeviceUnavailableError(f"no backend serves device {device!r}; use auto, cpu or cuda")


def resolve_quantization(quantization: str) -> str:
    name = quantization.lower()
    if name not in QUANTIZATION_ALIASES:
        raise ValueError(
            f"quantization {quantization!r} is not supported by the torch backend; use one of {sorted(QUANTIZATION_ALIASES)}"
        )
    return QUANTIZATION_ALIASES[name]


def create_runner(
    model_path: str | Path,
    *,
    device: str = "auto",
    dtype: Any = None,
    quantization: str = "auto",
    **kwargs: Any,
) -> ModelRunner:
    """A runner for a checkpoint folder, or random weights of the real shape for 'gpt-oss-20b'/'gpt-oss-120b'.

    kwargs go to the runner: block_size, num_kv_blocks, kv_cache_memory_fraction, kv_cache_bytes,
    max_model_len.
    """
    from tkr_embed.backends.torch.runner import TorchModelRunner, resolve_dtype

    torch_device = resolve_device(device)
    quant = resolve_quantization(quantization)
    if str(model_path) in RANDOM_WEIGHT_MODELS and not Path(model_path).exists():
        from tkr_embed.models.gpt_oss.config import GptOssConfig
        from tkr_embed.models.gpt_oss.random_init import build_random_model

        config = GptOssConfig.gpt_oss_20b() if str(model_path) == "gpt-oss-20b" else GptOssConfig.gpt_oss_120b()
        expert_format = "mxfp4" if quant == "mxfp4" else "dense"
        model = build_random_model(config, device=torch_device, dtype=resolve_dtype(dtype, torch_device), expert_format=expert_format)
        return TorchModelRunner.from_model(model, model_name=str(model_path), quantization=quant, **kwargs)
    return TorchModelRunner(model_path, device=torch_device, dtype=dtype, quantization=quant, **kwargs)
