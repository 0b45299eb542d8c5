"""Engine configuration (no torch here)."""

from __future__ import annotations

from dataclasses import dataclass, replace

from tkr_embed.engine.errors import ConfigurationError


@dataclass
class EngineConfig:
    """How the engine schedules work. Its defaults are the defaults of every way to build an engine (EngineArgs,
    the server's settings, the offline LLM, `tkr-embed bench`).

    `num_kv_blocks=None` uses every block the runner allocated; a smaller number caps the pool the
    scheduler hands out (the runner's cache stays as built). `block_size` is what a runner should be
    built with; the engine always follows the runner's own `info.block_size`. `max_model_len=None`
    follows the runner; a smaller value lowers the context limit. `lookahead`: see `Scheduler.lookahead`.

    `max_num_batched_tokens` bounds a step's tokens while sequences decode: every token of a step delays their
    next one. A step in which none decodes (an idle engine taking new prompts, long prompts still in their
    chunks) may take up to `max_num_batched_tokens_idle` instead: it delays no stream, and fewer, larger
    prefill steps cost less (each step reads every expert's weights once whatever its size). None: no
    difference.
    """

    max_num_seqs: int = 64
    max_num_batched_tokens: int = 8192
    max_num_batched_tokens_idle: int | None = None
    max_waiting: int = 256
    block_size: int = 16
    num_kv_blocks: int | None = None
    enable_prefix_caching: bool = True
    max_model_len: int | None = None
    # Launch the next decode step before this one's tokens reach the host (runners that can_follow)
    lookahead: bool = True

    def __post_init__(self) -> None:
        if self.max_num_seqs < 1:
            raise ConfigurationError("max_num_seqs must be at least 1", "max_num_seqs")
        if self.max_num_batched_tokens < 1:
            raise ConfigurationError("max_num_batched_tokens must be at least 1", "max_num_batched_tokens")
        if self.max_num_batched_tokens_idle is not None and self.max_num_batched_tokens_idle < 1:
            raise ConfigurationError("max_num_batched_tokens_idle must be at least 1", "max_num_batched_tokens_idle")
        if self.max_waiting < 1:
            raise ConfigurationError("max_waiting must be at least 1", "max_waiting")
        if self.block_size < 1:
            raise ConfigurationError("block_size must be at least 1", "block_size")
        if self.num_kv_blocks is not None and self.num_kv_blocks < 1:
            raise ConfigurationError("num_kv_blocks must be at least 1", "num_kv_blocks")
        if self.max_model_len is not None and self.max_model_len < 2:
            raise ConfigurationError("max_model_len must be at least 2", "max_model_len")

    @property
    def largest_step_tokens(self) -> int:
        """The most tokens one step computes: what the runner leaves memory for and compiles its kernels for."""
        return max(self.max_num_batched_tokens, self.max_num_batched_tokens_idle or 0)

    def within(self, max_step_tokens: int | None) -> EngineConfig:
        """This config with the idle budget lowered to the largest step the runner left memory for (None: no limit;
        max_num_batched_tokens itself always stands: the runner is built for it)."""
        if max_step_tokens is None or self.largest_step_tokens <= max_step_tokens:
            return self
        idle = max(max_step_tokens, self.max_num_batched_tokens)
        return replace(self, max_num_batched_tokens_idle=idle if idle > self.max_num_batched_tokens else None)
