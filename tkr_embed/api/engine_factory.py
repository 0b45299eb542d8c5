"""Start the engine the settings describe (the demo checkpoint when no model is configured): in an engine process
of its own, or in a thread of this one. The engine itself is built by `tkr_embed.builder`."""

from __future__ import annotations

import asyncio
import logging
import sys
from dataclasses import dataclass
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


async def start_engine(settings: Settings, tokenizer: Tokenizer) -> LoadedEngine:
    from tkr_embed.builder import ProcessBuild, build_engine
    from tkr_embed.engine.async_engine import AsyncEngine
    from tkr_embed.engine.engine_process import ProcessEngine
    from tkr_embed.harmony.tokenizer import get_tokenizer

    if settings.uses_demo_model:
        path = await asyncio.to_thread(ensure_demo_checkpoint, settings.demo_model_dir)
        logger.warning(
            "no model configured (GENERATION_MODEL_PATH / model.path): serving the tiny DEMO checkpoint with "
            "random weights from %s; its answers are noise",
            path,
        )
    else:
        path = Path(settings.model.path)
    args = settings.engine_args(path)
    engine: EngineClient
    if settings.engine.separate_process and tokenizer is get_tokenizer():
        # the child builds its own harmony tokenizer (the same offline vocabulary)
        engine = ProcessEngine(
            ProcessBuild(args, settings.log_level, settings.server.log_format == "json"),
            step_timeout_s=settings.engine.step_timeout_s,
        )
        await engine.start()
    else:
        engine = AsyncEngine(await asyncio.to_thread(build_engine, args, tokenizer))
        interval_ms = settings.engine.gil_switch_interval_ms
        sys.setswitchinterval(interval_ms / 1000)
        logger.info("GIL switch interval %.3g ms (engine.gil_switch_interval_ms)", interval_ms)
    info = engine.info
    logger.info(
        "model %s loaded from %s on %s%s",
        info.model_name,
        path,
        info.device,
        " (engine in its own process)" if isinstance(engine, ProcessEngine) else "",
    )
    return LoadedEngine(engine=engine, model_path=str(path), is_demo=settings.uses_demo_model)
