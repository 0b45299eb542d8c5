"""Pick and build a model runner for a device."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tkr_embed.backends.device import DeviceUnavailableError
from tkr_embed.backends.device import resolve_device as resolve_backend_device
from tkr_embed.engine.runner import ModelRunner

__all__ = ["DeviceUnavailableError", "create_runner", "resolve_device", "resolve_quantization"]

# Setting -> how the torch backend stores the experts. Experts stay MXFP4 except for `none`, which
# asks for them dequantized to the model dtype; torch keeps attention, embeddings and unembedding in
# the model dtype for every setting (8/4-bit dense weights are applied by the MLX backend).
QUANTIZATION_ALIASES = {"auto": "mxfp4", "q8": "mxfp4", "q4": "mxfp4", "mxfp4": "mxfp4", "none": "none"}
TORCH_QUANTIZATION_REASONS = {
    "auto": "auto on torch: experts MXFP4 (as the checkpoint stores them), other weights in the model dtype",
    "q8": "q8 on torch: experts MXFP4; attention/embeddings stay in the model dtype (8-bit applies on MLX only)",
    "q4": "q4 on torch: experts MXFP4; attention/embeddings stay in the model dtype (4-bit applies on MLX only)",
    "mxfp4": "mxfp4: experts MXFP4, other weights in the model dtype",
    "none": "none: experts dequantized to the model dtype, no quantization anywhere",
}
RANDOM_WEIGHT_MODELS = ("gpt-oss-20b", "gpt-oss-120b")


def resolve_device(device: str) -> str:
    """The torch device a setting names ('auto': CUDA, else CPU); MLX settings are handled in create_runner."""
    choice = resolve_backend_device(device)
    if choice.backend != "torch":
        raise DeviceUnavailableError(f"device {device!r} is served by the {choice.backend} backend, not torch")
    return choice.device


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
    max_model_len, max_num_batched_tokens (the largest step, whose activations the KV cache leaves room for);
    max_decode_batch (torch: the largest decode batch captured as a CUDA graph, the engine's max_num_seqs);
    cpu_threads (torch on the CPU: its intra-op threads, None for `backends.cpu_threads.auto_cpu_threads`).
    """
    choice = resolve_backend_device(device)
    cpu_threads = kwargs.pop("cpu_threads", None)  # torch's CPU threads; MLX schedules its own
    if choice.backend == "mlx":
        kwargs.pop("max_decode_batch", None)  # MLX captures no graphs
        from tkr_embed.backends.mlx.runner import MlxModelRunner

        return MlxModelRunner(model_path, device=choice.device, dtype=dtype, quantization=quantization, **kwargs)
    torch_device = choice.device
    if torch_device == "cpu":
        from tkr_embed.backends.cpu_threads import configure_cpu_threads

        configure_cpu_threads(cpu_threads)
    quant = resolve_quantization(quantization)
    runner = _build_torch_runner(model_path, torch_device, dtype, quant, kwargs)
    runner.info.extra["quantization_reason"] = TORCH_QUANTIZATION_REASONS[quantization.lower()]
    runner.info.extra["backend"] = "torch"
    return runner


def _build_torch_runner(model_path: str | Path, torch_device: str, dtype: Any, quant: str, kwargs: dict) -> ModelRunner:
    from tkr_embed.backends.torch.runner import TorchModelRunner, resolve_dtype

    if str(model_path) in RANDOM_WEIGHT_MODELS and not Path(model_path).exists():
        from tkr_embed.models.gpt_oss.config import GptOssConfig
        from tkr_embed.models.gpt_oss.random_init import build_random_model

        config = GptOssConfig.gpt_oss_20b() if str(model_path) == "gpt-oss-20b" else GptOssConfig.gpt_oss_120b()
        expert_format = "mxfp4" if quant == "mxfp4" else "dense"
        model = build_random_model(
            config, device=torch_device, dtype=resolve_dtype(dtype, torch_device), expert_format=expert_format
        )
        return TorchModelRunner.from_model(model, model_name=str(model_path), quantization=quant, **kwargs)
    return TorchModelRunner(model_path, device=torch_device, dtype=dtype, quantization=quant, **kwargs)
