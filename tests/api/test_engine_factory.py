"""The server's engine settings reach the engine it starts (the demo checkpoint on CPU)."""

from __future__ import annotations

import asyncio
import sys

from tkr_embed.api.engine_factory import start_engine
from tkr_embed.config import Settings
from tkr_embed.engine.async_engine import AsyncEngine
from tkr_embed.engine.engine_process import ProcessEngine
from tkr_embed.harmony.tokenizer import get_tokenizer


def test_engine_settings_reach_the_engine_and_the_process(tmp_path) -> None:
    settings = Settings(
        model={"device": "cpu"},
        engine={
            "lookahead": False,
            "max_num_seqs": 3,
            "kv_cache_blocks": 64,
            "gil_switch_interval_ms": 0.3,
            "separate_process": False,
        },
        storage={"data_dir": str(tmp_path)},
    )
    interval = sys.getswitchinterval()
    try:
        loaded = asyncio.run(start_engine(settings, get_tokenizer()))
        config = loaded.engine.engine.config
        assert (config.lookahead, config.max_num_seqs, config.num_kv_blocks) == (False, 3, 64)
        assert abs(sys.getswitchinterval() - 0.3e-3) < 1e-9
        assert loaded.is_demo
        assert isinstance(loaded.engine, AsyncEngine)
        defaults = Settings(storage={"data_dir": str(tmp_path)}).engine
        assert defaults.lookahead is True and defaults.separate_process is True
    finally:
        sys.setswitchinterval(interval)


def test_by_default_the_engine_is_built_in_a_child_process(tmp_path) -> None:
    settings = Settings(
        model={"device": "cpu"}, engine={"max_num_seqs": 3, "kv_cache_blocks": 64}, storage={"data_dir": str(tmp_path)}
    )

    async def build_and_stop():
        loaded = await start_engine(settings, get_tokenizer())
        try:
            engine = loaded.engine
            assert isinstance(engine, ProcessEngine) and engine.is_running
            assert engine.stats().kv_blocks_total == 64 and engine.info.vocab_size == 201088
        finally:
            await loaded.engine.shutdown()
        assert engine._process.exitcode == 0

    asyncio.run(build_and_stop())


def test_a_custom_tokenizer_keeps_the_engine_in_this_process(tmp_path) -> None:
    """The child can only build the harmony tokenizer: a server given another one runs the engine thread."""

    class Tokenizer:
        vocab_size, eos_token_ids = 201088, (200002,)

        def encode(self, text):
            return [1]

        def decode(self, ids):
            return ""

        def decode_bytes(self, ids):
            return b""

    settings = Settings(model={"device": "cpu"}, engine={"kv_cache_blocks": 64}, storage={"data_dir": str(tmp_path)})
    interval = sys.getswitchinterval()

    async def build_and_stop():
        loaded = await start_engine(settings, Tokenizer())
        assert isinstance(loaded.engine, AsyncEngine)
        await loaded.engine.shutdown()

    try:
        asyncio.run(build_and_stop())
    finally:
        sys.setswitchinterval(interval)
