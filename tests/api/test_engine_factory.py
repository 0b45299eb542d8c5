"""The server's engine settings reach the engine it builds (the demo checkpoint on CPU)."""

from __future__ import annotations

import asyncio
import sys

from tkr_embed.api.engine_factory import build_engine
from tkr_embed.config import Settings
from tkr_embed.harmony.tokenizer import get_tokenizer


def test_engine_settings_reach_the_engine_and_the_process(tmp_path) -> None:
    settings = Settings(
        model={"device": "cpu"},
        engine={"lookahead": False, "max_num_seqs": 3, "kv_cache_blocks": 64, "gil_switch_interval_ms": 0.3},
        storage={"data_dir": str(tmp_path)},
    )
    interval = sys.getswitchinterval()
    try:
        loaded = asyncio.run(build_engine(settings, get_tokenizer()))
        config = loaded.engine.engine.config
        assert (config.lookahead, config.max_num_seqs, config.num_kv_blocks) == (False, 3, 64)
        assert abs(sys.getswitchinterval() - 0.3e-3) < 1e-9
        assert loaded.is_demo
        assert Settings(storage={"data_dir": str(tmp_path)}).engine.lookahead is True      # the default
    finally:
        sys.setswitchinterval(interval)
