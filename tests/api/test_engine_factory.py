"""The server's engine settings reach the engine it builds (the demo checkpoint on CPU)."""

from __future__ import annotations

import asyncio
import sys

from tkr_embed.api.engine_factory import build_engine
from tkr_embed.config import Settings
from tkr_embed.engine.async_engine import AsyncEngine
from tkr_embed.engine.engine_process import ProcessEngine
from tkr_embed.harmony.tokenizer import get_tokenizer


def test_engine_settings_reach_the_engine_and_the_process(tmp_path) -> None:
    settings = Settings(
        model={"device": "cpu"},
        engine={"lookahead": False, "max_num_seqs": 3, "kv_cache_blocks": 64, "gil_switch_interval_ms": 0.3,
                "separate_process": False},
        storage={"data_dir": str(tmp_path)},
    )
    interval = sys.getswitchinterval()
    try:
        loaded = asyncio.run(build_engine(settings, get_tokenizer()))
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
    settings = Settings(model={"device": "cpu"}, engine={"max_num_seqs": 3, "kv_cache_blocks": 64},
                        storage={"data_dir": str(tmp_path)})

    async def build_and_stop():
        loaded = await build_engine(settings, get_tokenizer())
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
        loaded = await build_engine(settings, Tokenizer())
        assert isinstance(loaded.engine, AsyncEngine)
        await loaded.engine.shutdown()

    try:
        asyncio.run(build_and_stop())
    finally:
        sys.setswitchinterval(interval)


def test_the_runner_is_warmed_up_for_the_largest_step_before_serving(tmp_path, monkeypatch) -> None:
    """engine.warm_up (on by default) has the runner compile its kernels for the largest step (max_num_batched_tokens,
    or max_num_batched_tokens_idle when larger) before the engine serves, in the engine process and in the thread;
    off, it is skipped."""
    from tkr_embed.api.engine_factory import build_llm_engine, ensure_demo_checkpoint
    from tkr_embed.backends.torch.runner import TorchModelRunner
    from tkr_embed.engine.config import EngineConfig

    calls: list[int] = []
    monkeypatch.setattr(TorchModelRunner, "warm_up", lambda self, tokens: calls.append(tokens) or 0)
    path = str(ensure_demo_checkpoint(tmp_path / "demo"))
    config = EngineConfig(max_num_batched_tokens=512, num_kv_blocks=64)
    for warm in (True, False):
        engine = build_llm_engine(path, {"device": "cpu", "num_kv_blocks": 64}, config, ("warning", False), warm)
        assert engine.runner.info.num_kv_blocks == 64
    assert calls == [512]
    # a larger step for when nothing decodes is the largest step
    idle = EngineConfig(max_num_batched_tokens=512, max_num_batched_tokens_idle=2048, num_kv_blocks=64)
    build_llm_engine(path, {"device": "cpu", "num_kv_blocks": 64}, idle, ("warning", False), True)
    assert calls == [512, 2048]
    assert Settings(storage={"data_dir": str(tmp_path)}).engine.warm_up is True
    interval = sys.getswitchinterval()
    try:
        # on the CPU the idle budget is unset unless configured
        for warm, idle in ((True, None), (False, None), (True, 4096)):
            settings = Settings(model={"device": "cpu"}, storage={"data_dir": str(tmp_path)},
                                engine={"kv_cache_blocks": 64, "separate_process": False, "warm_up": warm,
                                        "max_num_batched_tokens": 1024, "max_num_batched_tokens_idle": idle})

            async def build_and_stop(settings=settings):
                loaded = await build_engine(settings, get_tokenizer())
                await loaded.engine.shutdown()

            asyncio.run(build_and_stop())
    finally:
        sys.setswitchinterval(interval)
    assert calls == [512, 2048, 1024, 4096]
