"""GENERATION_DEVICE and GENERATION_QUANTIZATION resolution, shared by the backends."""

from __future__ import annotations

from pathlib import Path

import pytest

from tkr_embed.backends.device import (
    GIB,
    DeviceChoice,
    DeviceProbe,
    DeviceUnavailableError,
    QuantizationError,
    default_max_num_seqs,
    idle_step_tokens,
    resolve_device,
    resolve_quantization,
)

LINUX_CPU = DeviceProbe(cuda_available=False, mlx_importable=False, mlx_metal_available=False, is_apple_silicon=False)
LINUX_MLX_CPU = DeviceProbe(
    cuda_available=False, mlx_importable=True, mlx_metal_available=False, is_apple_silicon=False
)
LINUX_CUDA = DeviceProbe(cuda_available=True, mlx_importable=True, mlx_metal_available=False, is_apple_silicon=False)
MAC = DeviceProbe(cuda_available=False, mlx_importable=True, mlx_metal_available=True, is_apple_silicon=True)
MAC_WITHOUT_MLX = DeviceProbe(
    cuda_available=False, mlx_importable=False, mlx_metal_available=False, is_apple_silicon=True
)


@pytest.mark.parametrize(
    ("requested", "probe", "backend", "device"),
    [
        ("auto", LINUX_CUDA, "torch", "cuda"),
        ("auto", MAC, "mlx", "gpu"),
        ("auto", MAC_WITHOUT_MLX, "torch", "cpu"),
        ("auto", LINUX_MLX_CPU, "torch", "cpu"),  # mlx-cpu is never picked on its own
        ("auto", LINUX_CPU, "torch", "cpu"),
        ("cpu", MAC, "torch", "cpu"),
        ("gpu", LINUX_CUDA, "torch", "cuda"),
        ("gpu", MAC, "mlx", "gpu"),
        ("CUDA:1", LINUX_CUDA, "torch", "cuda:1"),
        ("mlx", MAC, "mlx", "gpu"),
        ("mlx", LINUX_MLX_CPU, "mlx", "cpu"),
    ],
)
def test_device_resolution(requested: str, probe: DeviceProbe, backend: str, device: str) -> None:
    choice = resolve_device(requested, probe)
    assert (choice.backend, choice.device) == (backend, device)
    assert choice.reason


@pytest.mark.parametrize(
    ("requested", "probe", "message"),
    [
        ("cuda", MAC, "CUDA is not available"),
        ("gpu", LINUX_MLX_CPU, "neither a CUDA GPU nor MLX Metal"),
        ("mlx", LINUX_CPU, "mlx package is not installed"),
        ("tpu", LINUX_CUDA, "unknown device 'tpu'"),
    ],
)
def test_unavailable_forced_device_is_a_clear_error(requested: str, probe: DeviceProbe, message: str) -> None:
    with pytest.raises(DeviceUnavailableError, match=message):
        resolve_device(requested, probe)


def test_this_linux_machine_serves_mlx_on_its_cpu_backend() -> None:
    assert resolve_device("mlx") == DeviceChoice("mlx", "cpu", "forced: mlx without Metal, MLX's CPU backend")


@pytest.mark.parametrize(
    ("memory_gib", "name", "bits", "reason"),
    [
        (128, "q8", 8, "auto: 128.0 GiB of memory (32 GiB or more) -> q8"),
        (32, "q8", 8, "auto: 32.0 GiB of memory (32 GiB or more) -> q8"),
        (24, "q4", 4, "auto: 24.0 GiB of memory (16 to 32 GiB) -> q4"),
        (16, "q4", 4, "auto: 16.0 GiB of memory (16 to 32 GiB) -> q4"),
        (8, "q4", 4, "auto: 8.0 GiB of memory (under 16 GiB, the smallest setting) -> q4"),
    ],
)
def test_auto_quantization_follows_memory(memory_gib: int, name: str, bits: int, reason: str) -> None:
    choice = resolve_quantization("auto", memory_bytes=memory_gib * GIB)
    assert (choice.name, choice.bits, choice.reason) == (name, bits, reason)


def test_forced_quantizations_and_the_mxfp4_alias() -> None:
    assert [(c.name, c.bits) for c in map(resolve_quantization, ["none", "Q8", "q4", "mxfp4"])] == [
        ("none", None),
        ("q8", 8),
        ("q4", 4),
        ("none", None),
    ]
    assert resolve_quantization("q8").reason == "forced: q8"
    with pytest.raises(QuantizationError, match="unknown quantization 'int3'"):
        resolve_quantization("int3")


def test_factory_builds_the_mlx_runner_and_reports_the_auto_choice(demo_model_dir: Path) -> None:
    from tkr_embed.backends.factory import create_runner
    from tkr_embed.backends.mlx.runner import MlxModelRunner

    runner = create_runner(demo_model_dir, device="mlx", quantization="auto", memory_bytes=64 * GIB, num_kv_blocks=4)
    assert isinstance(runner, MlxModelRunner)
    info = runner.info
    assert (info.device, info.dtype, info.quantization, info.num_kv_blocks) == ("mlx:cpu", "float32", "q8", 4)
    assert info.extra["quantization_reason"] == "auto: 64.0 GiB of memory (32 GiB or more) -> q8"
    assert info.extra["experts"] == "mxfp4"
    with pytest.raises(DeviceUnavailableError, match="Metal was asked for"):
        MlxModelRunner(demo_model_dir, device="gpu", num_kv_blocks=4)
    with pytest.raises(QuantizationError):
        create_runner(demo_model_dir, device="mlx", quantization="q2", num_kv_blocks=4)


def test_a_step_without_decodes_may_be_four_times_larger_on_cuda_only() -> None:
    """The idle step budget (engine.max_num_batched_tokens_idle): given, it stands; unset, CUDA takes 4x the step
    budget and the other backends keep one budget (their memory is sized for max_num_batched_tokens)."""
    assert idle_step_tokens("auto", 8192, None, LINUX_CUDA) == 32768
    assert idle_step_tokens("cuda:1", 2048, None, LINUX_CUDA) == 8192
    assert idle_step_tokens("cpu", 8192, None, LINUX_CUDA) is None
    assert idle_step_tokens("auto", 8192, None, LINUX_CPU) is None
    assert idle_step_tokens("auto", 8192, None, MAC) is None
    assert idle_step_tokens("auto", 8192, 12288, LINUX_CPU) == 12288
    with pytest.raises(DeviceUnavailableError):
        idle_step_tokens("cuda", 8192, None, LINUX_CPU)


def test_cuda_runs_256_sequences_at_once_by_default_and_a_setting_stands() -> None:
    """engine.max_num_seqs unset: 256 where the torch backend runs on CUDA (the builder may lower it for a small KV
    cache), the engine's 64 on the CPU and MLX; set, it stands on every device."""
    assert default_max_num_seqs("auto", None, LINUX_CUDA) == 256
    assert default_max_num_seqs("cuda:1", None, LINUX_CUDA) == 256
    assert default_max_num_seqs("cpu", None, LINUX_CUDA) == 64
    assert default_max_num_seqs("auto", None, LINUX_CPU) == 64
    assert default_max_num_seqs("auto", None, MAC) == 64
    assert default_max_num_seqs("auto", 512, LINUX_CUDA) == 512
    assert default_max_num_seqs("auto", 8, LINUX_CPU) == 8
    with pytest.raises(DeviceUnavailableError):
        default_max_num_seqs("cuda", None, LINUX_CPU)
