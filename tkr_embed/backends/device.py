"""Which backend serves a device setting, and which quantization a quantization setting means.

Shared by every backend so that GENERATION_DEVICE and GENERATION_QUANTIZATION mean the same thing
everywhere:

- device `auto`: CUDA when torch sees a GPU, else MLX on Apple Silicon when Metal is available,
  else CPU torch. `cpu`, `cuda` (`cuda:N`), `mlx` force one; `gpu` is CUDA, or MLX's Metal where
  there is no CUDA. A forced device that is not available raises DeviceUnavailableError at start-up.
- quantization `none | q8 | q4 | auto`: experts always stay MXFP4 (as checkpoints store them);
  `q8` / `q4` quantize the other large weights (attention projections, embeddings, unembedding) to
  8 / 4 bits; `none` keeps them in the model dtype; `auto` picks from the machine's memory.
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from typing import Literal

from tkr_embed.engine.config import EngineConfig

Backend = Literal["torch", "mlx"]
GIB = 1 << 30
Q8_MIN_MEMORY = 32 * GIB  # auto: q8 with 32 GB or more ...
Q4_MIN_MEMORY = 16 * GIB  # ... q4 with 16 GB to 32 GB (and below, where nothing smaller exists)
QUANTIZATIONS = ("auto", "none", "q8", "q4")
QUANTIZATION_BITS = {"q8": 8, "q4": 4}


class DeviceUnavailableError(RuntimeError):
    """The requested device is not present here, or no backend serves it."""


class QuantizationError(ValueError):
    """The quantization setting is unknown, or the chosen backend cannot apply it."""


@dataclass(frozen=True)
class DeviceProbe:
    """What this machine offers; `detect()` looks, tests build one by hand."""

    cuda_available: bool
    mlx_importable: bool
    mlx_metal_available: bool
    is_apple_silicon: bool

    @classmethod
    def detect(cls) -> DeviceProbe:
        return cls(
            cuda_available=_cuda_available(),
            mlx_importable=_mlx_importable(),
            mlx_metal_available=_mlx_metal_available(),
            is_apple_silicon=platform.system() == "Darwin" and platform.machine() == "arm64",
        )


@dataclass(frozen=True)
class DeviceChoice:
    backend: Backend
    device: str  # torch: "cpu" / "cuda" / "cuda:N"; mlx: "gpu" (Metal) or "cpu"
    reason: str


@dataclass(frozen=True)
class QuantizationChoice:
    name: str  # "none", "q8" or "q4"; experts are MXFP4 in every case
    bits: int | None  # bits of the non-expert weights; None: the model dtype
    reason: str


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def _mlx_importable() -> bool:
    try:
        import mlx.core  # noqa: F401
    except ImportError:
        return False
    return True


def _mlx_metal_available() -> bool:
    try:
        import mlx.core as mx
    except ImportError:
        return False
    return bool(mx.metal.is_available())


def resolve_device(requested: str, probe: DeviceProbe | None = None) -> DeviceChoice:
    """Map a GENERATION_DEVICE value to a backend and its device, or raise DeviceUnavailableError."""
    probe = probe or DeviceProbe.detect()
    name = requested.strip().lower()
    if name == "auto":
        if probe.cuda_available:
            return DeviceChoice("torch", "cuda", "auto: a CUDA GPU is available")
        if probe.is_apple_silicon and probe.mlx_metal_available:
            return DeviceChoice("mlx", "gpu", "auto: Apple Silicon with MLX Metal")
        return DeviceChoice("torch", "cpu", "auto: no CUDA GPU and no MLX Metal, CPU torch")
    if name == "cpu":
        return DeviceChoice("torch", "cpu", "forced: cpu")
    if name == "gpu":
        if probe.cuda_available:
            return DeviceChoice("torch", "cuda", "forced: gpu (CUDA)")
        if probe.mlx_metal_available:
            return DeviceChoice("mlx", "gpu", "forced: gpu (MLX Metal)")
        raise DeviceUnavailableError("device 'gpu' was asked for but there is neither a CUDA GPU nor MLX Metal here")
    if name == "cuda" or name.startswith("cuda:"):
        if not probe.cuda_available:
            raise DeviceUnavailableError(f"device {requested!r} was asked for but CUDA is not available here")
        return DeviceChoice("torch", name, f"forced: {name}")
    if name == "mlx":
        if not probe.mlx_importable:
            raise DeviceUnavailableError(
                "device 'mlx' was asked for but the mlx package is not installed "
                "(pip install mlx on Apple Silicon, mlx[cpu] on Linux)"
            )
        if probe.mlx_metal_available:
            return DeviceChoice("mlx", "gpu", "forced: mlx (Metal)")
        return DeviceChoice("mlx", "cpu", "forced: mlx without Metal, MLX's CPU backend")
    raise DeviceUnavailableError(f"unknown device {requested!r}; use auto, cpu, gpu, cuda, cuda:N or mlx")


# CUDA: a step without decodes may take 4 x max_num_batched_tokens tokens by default (EngineConfig). Each prefill
# step reads and dequantizes every expert once, ~21 ms of an 8,192-token step on an H100 whatever its size.
CUDA_IDLE_STEP_FACTOR = 4


def idle_step_tokens(
    device: str, max_num_batched_tokens: int, configured: int | None, probe: DeviceProbe | None = None
) -> int | None:
    """EngineConfig.max_num_batched_tokens_idle for a device setting: the configured value, else
    CUDA_IDLE_STEP_FACTOR x max_num_batched_tokens where the torch backend runs on CUDA, else None (steps keep
    one budget: MLX and CPU memory is sized for max_num_batched_tokens)."""
    if configured is not None:
        return configured
    choice = resolve_device(device, probe)
    return CUDA_IDLE_STEP_FACTOR * max_num_batched_tokens if choice.device.startswith("cuda") else None


# CUDA: the decode step of the 20b reads every expert's weights whatever the batch, so a wider batch costs little
# more a step and gives many more tokens; 256 running sequences need ~13 GB of KV at 1,024 tokens each.
CUDA_MAX_NUM_SEQS = 256


def default_max_num_seqs(device: str, configured: int | None, probe: DeviceProbe | None = None) -> int:
    """EngineConfig.max_num_seqs for a device setting: the configured value, else CUDA_MAX_NUM_SEQS where the torch
    backend runs on CUDA (the builder lowers it where the KV cache is small: kv_budget.kv_sized_max_num_seqs), else
    EngineConfig's default (CPU and MLX steps grow slower with the batch, so they gain less from a wide one)."""
    if configured is not None:
        return configured
    choice = resolve_device(device, probe)
    return CUDA_MAX_NUM_SEQS if choice.device.startswith("cuda") else EngineConfig.max_num_seqs


def total_memory_bytes() -> int:
    """Physical memory of the machine (unified memory on Apple Silicon)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 0


def resolve_quantization(requested: str, *, memory_bytes: int | None = None) -> QuantizationChoice:
    """Map a GENERATION_QUANTIZATION value to a choice with its reason (shown by /info).

    `mxfp4` is accepted as the older name of `none` (experts MXFP4, the rest in the model dtype).
    """
    name = requested.strip().lower()
    if name == "mxfp4":
        name = "none"
    if name not in QUANTIZATIONS:
        raise QuantizationError(f"unknown quantization {requested!r}; use one of {', '.join(QUANTIZATIONS)}")
    if name != "auto":
        return QuantizationChoice(name, QUANTIZATION_BITS.get(name), f"forced: {name}")
    memory = total_memory_bytes() if memory_bytes is None else memory_bytes
    gib = memory / GIB
    if memory >= Q8_MIN_MEMORY:
        return QuantizationChoice("q8", 8, f"auto: {gib:.1f} GiB of memory (32 GiB or more) -> q8")
    if memory >= Q4_MIN_MEMORY:
        return QuantizationChoice("q4", 4, f"auto: {gib:.1f} GiB of memory (16 to 32 GiB) -> q4")
    return QuantizationChoice("q4", 4, f"auto: {gib:.1f} GiB of memory (under 16 GiB, the smallest setting) -> q4")
