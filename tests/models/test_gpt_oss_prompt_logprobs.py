"""The engine's prompt logprobs agree with transformers' GptOssForCausalLM on the same checkpoint (float32).

The parity tests bound our logits within FP32_ATOL of transformers'; a log-softmax moves by at most twice a
uniform bound on its logits (the logit itself and the log-sum-exp), hence the tolerance here.
"""

from __future__ import annotations

import pytest
import torch
from gpt_oss_helpers import random_prompt
from test_gpt_oss_parity import FP32_ATOL, reference_logits

from tkr_embed.backends.torch.runner import TorchModelRunner
from tkr_embed.engine.sampling_params import SamplingParams
from tkr_embed.llm import LLM

LOGPROB_ATOL = 2 * FP32_ATOL


@pytest.mark.parametrize("max_num_batched_tokens", [8192, 11])
def test_prompt_logprobs_match_transformers(model_fp32, reference_fp32, max_num_batched_tokens) -> None:
    prompts = [random_prompt(41, seed=21), random_prompt(17, seed=22)]
    runner = TorchModelRunner.from_model(model_fp32, num_kv_blocks=64, block_size=4)
    llm = LLM.from_runner(runner, block_size=4, max_num_batched_tokens=max_num_batched_tokens)
    results = llm.generate(prompts, SamplingParams(max_tokens=0, prompt_logprobs=2))
    for prompt, result in zip(prompts, results, strict=True):
        expected = torch.log_softmax(reference_logits(reference_fp32, prompt), -1)  # [L, V]
        scores = result.prompt_logprobs
        assert scores[0] is None and [lp.token_id for lp in scores[1:]] == prompt[1:]
        ours = torch.tensor([lp.logprob for lp in scores[1:]])
        theirs = expected[torch.arange(len(prompt) - 1), torch.tensor(prompt[1:])]
        torch.testing.assert_close(ours, theirs, atol=LOGPROB_ATOL, rtol=0)
        top = expected[:-1].topk(2, dim=-1)
        assert [[t for t, _ in lp.top_logprobs] for lp in scores[1:]] == top.indices.tolist()
