"""One builder, one set of defaults: the server's settings, the offline LLM and `tkr-embed bench` all build their
engine through `tkr_embed.builder` from EngineArgs (the demo checkpoint on CPU)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from dataclasses import fields

import pytest

from tkr_embed import LLM, SamplingParams
from tkr_embed.api.engine_factory import ensure_demo_checkpoint, start_engine
from tkr_embed.bench_args import add_bench_arguments
from tkr_embed.bench_cli import bench_args
from tkr_embed.builder import build_engine
from tkr_embed.config import Settings
from tkr_embed.engine.args import EngineArgs
from tkr_embed.engine.config import EngineConfig
from tkr_embed.engine.errors import ConfigurationError, InvalidRequestError
from tkr_embed.harmony.tokenizer import get_tokenizer


@pytest.fixture(scope="module")
def demo_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(ensure_demo_checkpoint(tmp_path_factory.mktemp("demo") / "ckpt"))


def test_the_settings_the_bench_and_engine_args_share_one_set_of_defaults(tmp_path) -> None:
    defaults = EngineArgs(model="m")
    from_settings = Settings(storage={"data_dir": str(tmp_path)}).engine_args("m")
    parser = argparse.ArgumentParser()
    add_bench_arguments(parser)
    from_bench = bench_args(parser.parse_args([]), "m")
    assert from_settings == defaults == from_bench
    schedule = defaults.engine_config(None)
    assert schedule == EngineConfig()  # the scheduling defaults are EngineConfig's own
    assert (schedule.max_num_batched_tokens, defaults.kv_cache_memory_fraction) == (8192, 0.85)


def test_every_engine_setting_of_the_server_reaches_engine_args(tmp_path) -> None:
    settings = Settings(
        model={"device": "cpu", "dtype": "float32", "quantization": "none"},
        engine={
            "max_num_seqs": 3,
            "max_num_batched_tokens": 512,
            "max_num_batched_tokens_idle": 1024,
            "max_waiting": 7,
            "block_size": 32,
            "kv_cache_blocks": 64,
            "kv_cache_memory_fraction": 0.5,
            "enable_prefix_caching": False,
            "max_model_len": 4096,
            "lookahead": False,
            "warm_up": False,
            "cpu_threads": 3,
        },
        storage={"data_dir": str(tmp_path)},
    )
    args = settings.engine_args("/models/x")
    assert args == EngineArgs(
        model="/models/x",
        device="cpu",
        dtype="float32",
        quantization="none",
        max_num_seqs=3,
        max_num_batched_tokens=512,
        max_num_batched_tokens_idle=1024,
        max_waiting=7,
        block_size=32,
        num_kv_blocks=64,
        kv_cache_memory_fraction=0.5,
        enable_prefix_caching=False,
        max_model_len=4096,
        lookahead=False,
        warm_up=False,
        cpu_threads=3,
    )
    # every EngineArgs field but the model's is set from the settings: none keeps a default of its own
    assert all(
        getattr(args, f.name) != f.default for f in fields(EngineArgs) if f.name not in ("model", "kv_cache_bytes")
    )


def test_a_bad_engine_setting_is_a_configuration_error_not_a_request_error() -> None:
    for bad in ({"max_num_seqs": 0}, {"kv_cache_memory_fraction": 1.5}, {"max_num_batched_tokens_idle": 0}):
        with pytest.raises(ConfigurationError) as refused:
            EngineArgs(model="m", **bad)
        assert refused.value.setting == next(iter(bad))
        assert not isinstance(refused.value, InvalidRequestError)


def test_the_runner_is_warmed_up_for_the_largest_step_before_serving(demo_path, tmp_path, monkeypatch) -> None:
    """engine.warm_up (on by default) has the runner compile its kernels for the largest step (max_num_batched_tokens,
    or max_num_batched_tokens_idle when larger) before the engine serves, however it is built; off, it is skipped."""
    from tkr_embed.backends.torch.runner import TorchModelRunner

    calls: list[int] = []
    monkeypatch.setattr(TorchModelRunner, "warm_up", lambda self, tokens: calls.append(tokens) or 0)
    for warm in (True, False):
        engine = build_engine(
            EngineArgs(model=demo_path, device="cpu", num_kv_blocks=64, max_num_batched_tokens=512, warm_up=warm)
        )
        assert engine.runner.info.num_kv_blocks == 64
    assert calls == [512]
    # a larger step for when nothing decodes is the largest step
    build_engine(
        EngineArgs(
            model=demo_path,
            device="cpu",
            num_kv_blocks=64,
            max_num_batched_tokens=512,
            max_num_batched_tokens_idle=2048,
        )
    )
    assert calls == [512, 2048]
    LLM(demo_path, device="cpu", num_kv_blocks=64, max_num_batched_tokens=256)  # the offline API builds alike
    assert calls == [512, 2048, 256]
    interval = sys.getswitchinterval()
    try:
        # the server, in its engine thread; on the CPU the idle budget is unset unless configured
        for warm, idle in ((True, None), (False, None), (True, 4096)):
            settings = Settings(
                model={"device": "cpu"},
                storage={"data_dir": str(tmp_path)},
                engine={
                    "kv_cache_blocks": 64,
                    "separate_process": False,
                    "warm_up": warm,
                    "max_num_batched_tokens": 1024,
                    "max_num_batched_tokens_idle": idle,
                },
            )

            async def start_and_stop(settings=settings):
                loaded = await start_engine(settings, get_tokenizer())
                await loaded.engine.shutdown()

            asyncio.run(start_and_stop())
    finally:
        sys.setswitchinterval(interval)
    assert calls == [512, 2048, 256, 1024, 4096]


def test_the_offline_llm_takes_engine_args_and_refuses_unknown_ones(demo_path) -> None:
    llm = LLM(demo_path, device="cpu", num_kv_blocks=64, max_num_seqs=2, lookahead=False)
    config = llm.engine.config
    assert (config.num_kv_blocks, config.max_num_seqs, config.lookahead) == (64, 2, False)
    results = llm.generate([[1000, 2000, 3000]] * 3, SamplingParams(max_tokens=4, temperature=0.0, ignore_eos=True))
    assert [len(result.token_ids) for result in results] == [4, 4, 4]
    assert results[0].token_ids == results[1].token_ids == results[2].token_ids
    with pytest.raises(TypeError, match="max_num_seq"):
        LLM(demo_path, device="cpu", max_num_seq=2)


def test_a_device_default_max_num_seqs_is_lowered_to_what_the_kv_cache_holds(demo_path) -> None:
    """The CUDA default of 256 running sequences stands where the KV cache gives each 1,024 tokens; a smaller cache
    lowers it (never below the engine's 64); a configured max_num_seqs is never changed."""
    from tkr_embed.builder import fit_max_num_seqs

    small = build_engine(EngineArgs(model=demo_path, device="cpu", num_kv_blocks=64, warm_up=False))  # 1,024 tokens
    assert small.config.max_num_seqs == 64  # the CPU's default
    assert fit_max_num_seqs(256, small.runner) == 64
    roomy = build_engine(EngineArgs(model=demo_path, device="cpu", num_kv_blocks=8192, warm_up=False))  # 131,072
    assert fit_max_num_seqs(256, roomy.runner) == 128
    assert fit_max_num_seqs(100, roomy.runner) == 100
    told = build_engine(EngineArgs(model=demo_path, device="cpu", num_kv_blocks=64, max_num_seqs=200, warm_up=False))
    assert told.config.max_num_seqs == 200
