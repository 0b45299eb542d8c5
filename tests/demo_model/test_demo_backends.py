"""The trained demo model gives the same greedy answers on the torch CPU backend and the MLX backend (mlx-cpu on
Linux; skipped where MLX is not installed)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from demo_prompts import demo_prompts

from tkr_embed import LLM, SamplingParams
from tkr_embed.api.engine_factory import ensure_demo_checkpoint
from tkr_embed.harmony.tokenizer import get_encoding

pytest.importorskip("mlx.core")
torch.set_num_threads(2)


def _llm(path: Path, device: str) -> LLM:
    quantization = "none" if device == "mlx" else "auto"
    return LLM(path, device=device, dtype="float32", quantization=quantization, num_kv_blocks=512, block_size=16)


def test_torch_and_mlx_answer_alike(tmp_path_factory: pytest.TempPathFactory) -> None:
    path = ensure_demo_checkpoint(tmp_path_factory.mktemp("demo") / "ckpt")
    prompts = demo_prompts(seed=11)
    params = [SamplingParams(temperature=0.0, max_tokens=300, stop_token_ids=p.stop_token_ids) for p in prompts]
    on_torch = _llm(path, "cpu").generate([p.token_ids for p in prompts], params)
    on_mlx = _llm(path, "mlx").generate([p.token_ids for p in prompts], params)
    assert [r.token_ids for r in on_mlx] == [r.token_ids for r in on_torch]
    encoding = get_encoding()
    answered = [p.expected in encoding.decode(r.token_ids) for p, r in zip(prompts, on_torch, strict=True)]
    assert answered[3:] == [True, True, True], answered  # the weather calls (the sums may be wrong: DEMO_MODEL.md)
