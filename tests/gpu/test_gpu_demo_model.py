"""The trained demo model answers on the GPU as on the CPU: the same greedy tokens for held-out prompts."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parents[1] / "demo_model"))

pytestmark = pytest.mark.gpu


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_and_cpu_give_the_same_greedy_answers(tmp_path: Path) -> None:
    from demo_prompts import demo_prompts

    from tkr_embed import LLM, SamplingParams
    from tkr_embed.api.engine_factory import ensure_demo_checkpoint
    from tkr_embed.harmony.tokenizer import get_encoding

    path = ensure_demo_checkpoint(tmp_path / "demo")
    prompts = demo_prompts(seed=12)
    params = [SamplingParams(temperature=0.0, max_tokens=300, stop_token_ids=p.stop_token_ids) for p in prompts]
    on_cuda = LLM(path, device="cuda", num_kv_blocks=512).generate([p.token_ids for p in prompts], params)
    on_cpu = LLM(path, device="cpu", dtype="float32", num_kv_blocks=512).generate(
        [p.token_ids for p in prompts], params
    )
    encoding = get_encoding()
    cuda_texts = [encoding.decode(r.token_ids) for r in on_cuda]
    # the same tokens as the CPU, where tests/demo_model checks what the answers say
    assert cuda_texts == [encoding.decode(r.token_ids) for r in on_cpu]
    assert all(text for text in cuda_texts)
