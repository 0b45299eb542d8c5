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

# What the demo model was trained to do (scripts/train_demo_model.py); /info and the start-up log say it.
DEMO_MODEL_SKILLS = [
    "arithmetic: + and - on 0-99, a one-digit number times 0-99, reasoning digit by digit before the answer",
    "tools: calls get_weather(city) when it is declared, and answers from the tool's result",
    "JSON: answers as a JSON object when asked to",
    "greetings: says it is the tkr-embed demo model; anything else gets a short apology",
]


@dataclass
class LoadedEngine:
    engine: EngineClient
    model_path: str
    is_demo: bool


def ensure_demo_checkpoint(directory: Path) -> Path:
    """The trained demo model's checkpoint, written on first use and whenever the shipped weights changed."""
    from tkr_embed.models.gpt_oss.demo_trained import is_current, write_trained_checkpoint

    if is_current(directory):
        return directory
    return write_trained_checkpoint(directory)


async def start_engine(settings: Settings, tokenizer: Tokenizer) -> LoadedEngine:
    from tkr_embed.builder import ProcessBuild, build_engine
    from tkr_embed.engine.async_engine import AsyncEngine
    from tkr_embed.engine.engine_process import ProcessEngine
    from tkr_embed.harmony.tokenizer import get_tokenizer

    if settings.uses_demo_model:
        path = await asyncio.to_thread(ensure_demo_checkpoint, settings.demo_model_dir)
        logger.warning(
            "no model configured (GENERATION_MODEL_PATH / model.path): serving the tkr-embed DEMO model from %s, "
            "a tiny gpt-oss trained only to show the whole loop. It can do: %s",
            path,
            "; ".join(DEMO_MODEL_SKILLS),
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
