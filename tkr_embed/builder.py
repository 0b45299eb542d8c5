"""The one place an engine is built: EngineArgs -> runner (device, KV cache, kernels warmed up) -> LLMEngine.

The offline `LLM`, `tkr-embed bench` and the server (in its engine process, or its engine thread) all build
their engine here, so each runs the engine the others run.
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass

from tkr_embed.engine.args import EngineArgs
from tkr_embed.engine.llm_engine import LLMEngine
from tkr_embed.engine.runner import ModelRunner
from tkr_embed.engine.tokenizer import Tokenizer

logger = logging.getLogger(__name__)


def build_engine(args: EngineArgs, tokenizer: Tokenizer | None = None) -> LLMEngine:
    """Load the model the args name and build the engine around it. `tokenizer` None: the harmony tokenizer."""
    from tkr_embed.backends.device import default_max_num_seqs, idle_step_tokens
    from tkr_embed.backends.factory import create_runner
    from tkr_embed.engine.gc_pauses import freeze_loaded_objects

    if tokenizer is None:  # harmony requests, which may carry grammars: their tokenizer builds beside the model
        from tkr_embed.structured.matcher import prepare_grammar_tokenizer

        prepare_grammar_tokenizer()
    # The idle step budget and the default max_num_seqs depend on the device, which only the backends can probe.
    idle = idle_step_tokens(args.device, args.max_num_batched_tokens, args.max_num_batched_tokens_idle)
    max_num_seqs = default_max_num_seqs(args.device, args.max_num_seqs)
    runner = create_runner(args.model, **args.runner_options(idle, max_num_seqs))
    if args.max_num_seqs is None:
        max_num_seqs = fit_max_num_seqs(max_num_seqs, runner)
    config = args.engine_config(idle, max_num_seqs)
    if args.warm_up:
        warm_up(runner, config.within(runner.info.max_step_tokens).largest_step_tokens)
    if tokenizer is None:
        from tkr_embed.harmony.tokenizer import get_tokenizer

        tokenizer = get_tokenizer()
    engine = LLMEngine(runner, tokenizer, config)
    freeze_loaded_objects()
    return engine


def fit_max_num_seqs(default: int, runner: ModelRunner) -> int:
    """The device's default max_num_seqs, lowered where the runner's KV cache is small (logged)."""
    from tkr_embed.backends.kv_budget import kv_sized_max_num_seqs
    from tkr_embed.engine.config import EngineConfig

    info = runner.info
    fitted = kv_sized_max_num_seqs(
        default, kv_tokens=info.num_kv_blocks * info.block_size, floor=EngineConfig.max_num_seqs
    )
    if fitted < default:
        logger.info(
            "max_num_seqs %d (not %d): the KV cache holds %d tokens (engine.max_num_seqs sets it)",
            fitted,
            default,
            info.num_kv_blocks * info.block_size,
        )
    return fitted


def warm_up(runner: ModelRunner, max_step_tokens: int) -> None:
    """`runner.warm_up` (compile the device's kernels before serving), timed in the log."""
    began = time.perf_counter()
    if runner.warm_up(max_step_tokens):
        logger.info(
            "kernels warmed up for steps of up to %d tokens in %.1f s (engine.warm_up)",
            max_step_tokens,
            time.perf_counter() - began,
        )


@dataclass(frozen=True)
class ProcessBuild:
    """What the server's engine process runs first (`ProcessEngine`; picklable): logging as the server's, then
    `build_engine` with the harmony tokenizer."""

    args: EngineArgs
    log_level: str
    log_json: bool

    def __call__(self) -> LLMEngine:
        from tkr_embed.logging import configure_logging

        configure_logging(self.log_level, json=self.log_json, stream=sys.stderr)
        return build_engine(self.args)
