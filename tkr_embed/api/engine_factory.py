"""Build the engine the settings describe (the demo checkpoint when no model is configured)."""

from __future__ import annotations

import asyncio
import functools
import logging
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

from tkr_embed.config import Settings
from tkr_embed.engine.client import EngineClient
from tkr_embed.engine.tokenizer import Tokenizer

logger = logging.getLogger("tkr_embed.api")


@dataclass
class LoadedEngine:
    engine: EngineClient
    model_path: str
    is_demo: bool


def ensure_demo_checkpoint(directory: Path) -> Path:
    """The tiny random-weight demo checkpoint, written on first use."""
    from tkr_embed.models.gpt_oss.demo import write_demo_checkpoint

    if (directory / "config.json").is_file():
        return directory
    directory.mkdir(parents=True, exist_ok=True)
    return write_demo_checkpoint(directory)


async def build_engine(settings: Settings, tokenizer: Tokenizer) -> LoadedEngine:
    from tkr_embed.backends.factory import create_runner
    from tkr_embed.engine.async_engine import AsyncEngine
    from tkr_embed.engine.config import EngineConfig
    from tkr_embed.engine.engine_process import ProcessEngine
    from tkr_embed.engine.gc_pauses import freeze_loaded_objects
    from tkr_embed.harmony.tokenizer import get_tokenizer

    if settings.uses_demo_model:
        path = await asyncio.to_thread(ensure_demo_checkpoint, settings.demo_model_dir)
        logger.warning(
            "no model configured (GENERATION_MODEL_PATH / model.path): serving the tiny DEMO checkpoint with "
            "random weights from %s; its answers are noise", path,
        )
    else:
        path = Path(settings.model.path)
    model = settings.model
    engine_settings = settings.engine
    config = EngineConfig(
        max_num_seqs=engine_settings.max_num_seqs,
        max_num_batched_tokens=engine_settings.max_num_batched_tokens,
        max_num_batched_tokens_idle=engine_settings.max_num_batched_tokens_idle,   # unset: see with_idle_default
        max_waiting=engine_settings.max_waiting,
        block_size=engine_settings.block_size,
        num_kv_blocks=engine_settings.kv_cache_blocks,
        enable_prefix_caching=engine_settings.enable_prefix_caching,
        max_model_len=engine_settings.max_model_len,
        lookahead=engine_settings.lookahead,
    )
    runner_options: dict[str, object] = {
        "block_size": engine_settings.block_size,
        "kv_cache_memory_fraction": engine_settings.kv_cache_memory_fraction,
        "max_num_batched_tokens": config.max_num_batched_tokens,  # the KV cache leaves room for such a step
    }
    if engine_settings.kv_cache_blocks is not None:
        runner_options["num_kv_blocks"] = engine_settings.kv_cache_blocks
    if engine_settings.max_model_len is not None:
        runner_options["max_model_len"] = engine_settings.max_model_len
    runner_kwargs = dict(
        device=model.device,   # "gpu" is CUDA, or MLX Metal on a Mac: the backend factory decides
        dtype=None if model.dtype == "auto" else model.dtype,
        quantization=model.quantization,
        **runner_options,
    )
    engine: EngineClient
    if engine_settings.separate_process and tokenizer is get_tokenizer():
        # the child builds its own harmony tokenizer (the same offline vocabulary)
        engine = ProcessEngine(functools.partial(build_llm_engine, str(path), runner_kwargs, config,
                                                 (settings.log_level, settings.server.log_format == "json"),
                                                 engine_settings.warm_up))
        await engine.start()
    else:
        config, runner_kwargs = await asyncio.to_thread(with_idle_default, config, runner_kwargs)
        runner = await asyncio.to_thread(create_runner, str(path), **runner_kwargs)
        if engine_settings.warm_up:
            await asyncio.to_thread(warm_up, runner, config.within(runner.info.max_step_tokens).largest_step_tokens)
        engine = AsyncEngine.from_runner(runner, tokenizer, config)
        freeze_loaded_objects()
        sys.setswitchinterval(engine_settings.gil_switch_interval_ms / 1000)
        logger.info("GIL switch interval %.3g ms (engine.gil_switch_interval_ms)", engine_settings.gil_switch_interval_ms)
    info = engine.info
    logger.info("model %s loaded from %s on %s%s", info.model_name, path, info.device,
                " (engine in its own process)" if isinstance(engine, ProcessEngine) else "")
    return LoadedEngine(engine=engine, model_path=str(path), is_demo=settings.uses_demo_model)


def with_idle_default(config, runner_kwargs: dict):
    """(config, runner options) with the idle step budget resolved: engine.max_num_batched_tokens_idle, or unset the
    device's default (`backends.device.idle_step_tokens`), which the runner leaves room for where that costs little
    cache. Called where the runner is built: the device probe imports torch, which the HTTP process does without."""
    from tkr_embed.backends.device import idle_step_tokens

    idle = idle_step_tokens(runner_kwargs.get("device", "auto"), config.max_num_batched_tokens,
                            config.max_num_batched_tokens_idle)
    return replace(config, max_num_batched_tokens_idle=idle), {**runner_kwargs, "max_idle_step_tokens": idle}


def warm_up(runner, max_step_tokens: int) -> None:
    """`runner.warm_up` (compile the device's kernels before serving), timed in the log."""
    began = time.perf_counter()
    if runner.warm_up(max_step_tokens):
        logger.info("kernels warmed up for steps of up to %d tokens in %.1f s (engine.warm_up)", max_step_tokens,
                    time.perf_counter() - began)


def build_llm_engine(path: str, runner_kwargs: dict, config, logging_setup: tuple[str, bool], warm: bool = True):
    """The engine process's builder (`ProcessEngine`): logging as the server's, the runner (warmed up unless
    told not to), the engine."""
    from tkr_embed.backends.factory import create_runner
    from tkr_embed.engine.gc_pauses import freeze_loaded_objects
    from tkr_embed.engine.llm_engine import LLMEngine
    from tkr_embed.harmony.tokenizer import get_tokenizer
    from tkr_embed.logging import configure_logging

    level, as_json = logging_setup
    configure_logging(level, json=as_json, stream=sys.stderr)
    config, runner_kwargs = with_idle_default(config, runner_kwargs)
    runner = create_runner(path, **runner_kwargs)
    if warm:
        warm_up(runner, config.within(runner.info.max_step_tokens).largest_step_tokens)
    engine = LLMEngine(runner, get_tokenizer(), config)
    freeze_loaded_objects()
    return engine
