"""EngineArgs: everything that decides how an engine is built, with the one set of defaults (no torch here).

The server's settings (config.py), the offline `LLM` and `tkr-embed bench` each fill one EngineArgs, and
`tkr_embed.builder.build_engine` builds the engine from it. Scheduling defaults are EngineConfig's; the runner's
are here.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from tkr_embed.engine.config import EngineConfig
from tkr_embed.engine.errors import ConfigurationError

DEFAULT_KV_CACHE_MEMORY_FRACTION = 0.85  # of the device memory left free after the weights: the KV cache


@dataclass(frozen=True)
class EngineArgs:
    """`model`: a checkpoint folder in the Hugging Face layout, or "gpt-oss-20b" / "gpt-oss-120b" for random weights
    of the real shape (benchmarks). `device`: auto | cpu | cuda | gpu | mlx. `dtype`: None for the device's default.
    `quantization`: auto | q4 | q8 | none | mxfp4. The KV cache holds `num_kv_blocks` blocks, else `kv_cache_bytes`,
    else `kv_cache_memory_fraction` of the free memory. `max_num_batched_tokens_idle=None`: the device's default
    (`backends.device.idle_step_tokens`). `max_num_seqs=None`: the device's default
    (`backends.device.default_max_num_seqs`: 256 on CUDA, lowered where the KV cache is small; elsewhere
    EngineConfig's). `warm_up`: compile the device's kernels for every step size before serving. `cpu_threads`: torch's intra-op threads on the CPU; None: every usable core but one
    (`backends.cpu_threads`)."""

    model: str
    device: str = "auto"
    dtype: Any = None
    quantization: str = "auto"
    max_num_seqs: int | None = None
    max_num_batched_tokens: int = EngineConfig.max_num_batched_tokens
    max_num_batched_tokens_idle: int | None = EngineConfig.max_num_batched_tokens_idle
    max_waiting: int = EngineConfig.max_waiting
    block_size: int = EngineConfig.block_size
    num_kv_blocks: int | None = EngineConfig.num_kv_blocks
    kv_cache_memory_fraction: float = DEFAULT_KV_CACHE_MEMORY_FRACTION
    kv_cache_bytes: int | None = None
    enable_prefix_caching: bool = EngineConfig.enable_prefix_caching
    max_model_len: int | None = EngineConfig.max_model_len
    lookahead: bool = EngineConfig.lookahead
    warm_up: bool = True
    cpu_threads: int | None = None

    def __post_init__(self) -> None:
        if not 0 < self.kv_cache_memory_fraction <= 1:
            raise ConfigurationError("kv_cache_memory_fraction must be in (0, 1]", "kv_cache_memory_fraction")
        if self.kv_cache_bytes is not None and self.kv_cache_bytes < 1:
            raise ConfigurationError("kv_cache_bytes must be at least 1", "kv_cache_bytes")
        if self.cpu_threads is not None and self.cpu_threads < 1:
            raise ConfigurationError("cpu_threads must be at least 1", "cpu_threads")
        self.engine_config(self.max_num_batched_tokens_idle)  # raises ConfigurationError on a bad schedule setting

    def engine_config(self, max_num_batched_tokens_idle: int | None, max_num_seqs: int | None = None) -> EngineConfig:
        """The scheduling part, with the idle step budget and max_num_seqs resolved for the device (the builder
        resolves them; None: this field's value, else EngineConfig's)."""
        names = {f.name for f in fields(EngineConfig)} - {"max_num_batched_tokens_idle", "max_num_seqs"}
        return EngineConfig(
            **{name: getattr(self, name) for name in names},
            max_num_batched_tokens_idle=max_num_batched_tokens_idle,
            max_num_seqs=self._max_num_seqs(max_num_seqs),
        )

    def _max_num_seqs(self, resolved: int | None) -> int:
        for value in (resolved, self.max_num_seqs):
            if value is not None:
                return value
        return EngineConfig.max_num_seqs

    def runner_options(
        self, max_num_batched_tokens_idle: int | None, max_num_seqs: int | None = None
    ) -> dict[str, Any]:
        """The runner factory's keyword arguments (`backends.factory.create_runner`)."""
        return {
            "device": self.device,
            "dtype": self.dtype,
            "quantization": self.quantization,
            "block_size": self.block_size,
            "num_kv_blocks": self.num_kv_blocks,
            "kv_cache_memory_fraction": self.kv_cache_memory_fraction,
            "kv_cache_bytes": self.kv_cache_bytes,
            "max_model_len": self.max_model_len,
            # the KV cache leaves room for steps of these sizes
            "max_num_batched_tokens": self.max_num_batched_tokens,
            "max_idle_step_tokens": max_num_batched_tokens_idle,
            # the largest decode batch the CUDA graphs capture
            "max_decode_batch": self._max_num_seqs(max_num_seqs),
            "cpu_threads": self.cpu_threads,
        }
