"""Our paged, ragged-batch forward computes what transformers' GptOssForCausalLM computes.

float32: our logits within 2e-4 absolute of transformers' (measured ~1e-5 on logits of magnitude ~20).
bfloat16: two bf16 forwards round differently, so neither is compared with the other; each is measured against
the float32 reference, and ours must be no worse than transformers' own bf16 error, plus the margins below.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from gpt_oss_helpers import random_prompt

FP32_ATOL = 2e-4

# Our bf16 error against float32 may exceed transformers' bf16 error by error * REL_MARGIN + ABS_MARGIN.
# Mean |Δ| averages ~2e7 logits, so it is stable: 10% covers a different but equally good order of roundings.
BF16_MEAN_REL_MARGIN = 0.10
# The mean error of merely rounding a logit of typical size (|logit| ~ 3, bf16 step 1/64) to bf16.
BF16_MEAN_ABS_MARGIN = 0.004
# Max |Δ| is one outlier among ~2e7 logits, so it swings by tens of percent from one prompt set to the next.
BF16_MAX_REL_MARGIN = 0.25
# Two bf16 steps at the largest logits (|logit| in [16, 32) rounds in steps of 0.125).
BF16_MAX_ABS_MARGIN = 0.25
# About 3 of the 105 positions: where float32's top two logits lie within rounding, either side of the tie is chance.
BF16_ARGMAX_MARGIN = 0.03


def reference_logits(reference, token_ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return reference(torch.tensor([token_ids])).logits[0].float()  # [L, vocab]


# Each schedule is a list of steps; a step lists (seq_id, number of new tokens). Sequences are
# teacher-forced through their prompt, so a single reference forward gives every expected logit.
PROMPT_LENGTHS = {0: 41, 1: 23, 2: 6, 3: 35}
SCHEDULES = {
    "one_full_prefill_each": [[(0, 41)], [(1, 23)]],
    "ragged_prefills_in_one_batch": [[(0, 41), (1, 23), (2, 6), (3, 35)]],
    "chunked_prefill_mixed_with_decodes": [
        [(0, 20), (2, 3)],
        [(0, 17), (2, 1), (1, 9)],
        [(0, 1), (2, 1), (1, 14), (3, 18)],
        [(0, 1), (2, 1), (3, 17)],
        [(0, 1), (3, 0)],
        [(0, 1)],
    ],
    "decode_only_past_the_window": [[(1, 5)]] + [[(1, 1)] for _ in range(18)],
}


def run_schedule(runner, prompts: dict[int, list[int]], schedule) -> dict[int, torch.Tensor]:
    consumed = {seq_id: 0 for seq_id in prompts}
    logits: dict[int, list[torch.Tensor]] = {seq_id: [] for seq_id in prompts}
    for step in schedule:
        chunks = []
        for seq_id, count in step:
            if count == 0:
                continue
            start = consumed[seq_id]
            chunks.append((seq_id, prompts[seq_id][start : start + count]))
            consumed[seq_id] += count
        for (seq_id, _), chunk_logits in zip(chunks, runner.step(chunks), strict=True):
            logits[seq_id].append(chunk_logits)
    return {seq_id: torch.cat(parts) for seq_id, parts in logits.items() if parts}


@pytest.mark.parametrize("schedule_name", list(SCHEDULES))
def test_fp32_logits_match_reference_for_batch_mixes(schedule_name, model_fp32, reference_fp32, paged_runner):
    prompts = {seq_id: random_prompt(n, seed=seq_id) for seq_id, n in PROMPT_LENGTHS.items()}
    ours = run_schedule(paged_runner(model_fp32), prompts, SCHEDULES[schedule_name])
    assert ours, "the schedule computed nothing"
    for seq_id, logits in ours.items():
        expected = reference_logits(reference_fp32, prompts[seq_id][: logits.shape[0]])
        assert logits.shape == expected.shape
        torch.testing.assert_close(logits, expected, atol=FP32_ATOL, rtol=0)


def test_prompts_cross_the_sliding_window(model_fp32):
    # Guard the parity tests above: they only prove the window mask if prompts are longer than it.
    assert max(PROMPT_LENGTHS.values()) > 2 * model_fp32.config.sliding_window
    assert model_fp32.config.layer_types[0] == "sliding_attention"


@dataclass(frozen=True)
class Bf16Error:
    """How far bf16 logits [N, vocab] lie from the float32 reference, over all N positions."""

    mean: float
    max: float
    argmax_agreement: float

    @classmethod
    def measure(cls, logits: torch.Tensor, fp32: torch.Tensor) -> Bf16Error:
        diff = (logits - fp32).abs()
        same_argmax = (logits.argmax(-1) == fp32.argmax(-1)).float().mean()
        return cls(diff.mean().item(), diff.max().item(), same_argmax.item())


def test_bf16_logits_are_as_close_to_float32_as_transformers_bf16_logits(
    model_bf16, reference_bf16, reference_fp32, paged_runner
):
    prompts = {seq_id: random_prompt(n, seed=seq_id) for seq_id, n in PROMPT_LENGTHS.items()}
    ours = run_schedule(paged_runner(model_bf16), prompts, SCHEDULES["chunked_prefill_mixed_with_decodes"])
    # Pooled over every position of every sequence: per-sequence argmax agreement on 6 positions is too coarse.
    seq_ids = sorted(ours)
    consumed = [prompts[seq_id][: ours[seq_id].shape[0]] for seq_id in seq_ids]
    ours_logits = torch.cat([ours[seq_id] for seq_id in seq_ids])
    theirs_logits = torch.cat([reference_logits(reference_bf16, token_ids) for token_ids in consumed])
    fp32 = torch.cat([reference_logits(reference_fp32, token_ids) for token_ids in consumed])
    ours_error = Bf16Error.measure(ours_logits, fp32)
    theirs_error = Bf16Error.measure(theirs_logits, fp32)
    report = f"ours {ours_error}, transformers' {theirs_error}"
    assert theirs_error.mean > 0, "the bf16 reference equals the float32 one: nothing is measured"
    assert ours_error.mean <= theirs_error.mean * (1 + BF16_MEAN_REL_MARGIN) + BF16_MEAN_ABS_MARGIN, report
    assert ours_error.max <= theirs_error.max * (1 + BF16_MAX_REL_MARGIN) + BF16_MAX_ABS_MARGIN, report
    assert ours_error.argmax_agreement >= theirs_error.argmax_agreement - BF16_ARGMAX_MARGIN, report


def test_chunked_prefill_then_decode_equals_one_full_forward(model_fp32, paged_runner):
    prompt = random_prompt(45, seed=7)
    full = paged_runner(model_fp32).step([(0, prompt)])[0]  # [45, vocab]
    runner = paged_runner(model_fp32, seed=3)
    parts = [runner.step([(0, prompt[a:b])])[0] for a, b in [(0, 13), (13, 30), (30, 40)]]
    parts += [runner.step([(0, [token])])[0] for token in prompt[40:]]  # decode the last 5
    torch.testing.assert_close(torch.cat(parts), full, atol=FP32_ATOL, rtol=0)


def test_greedy_generation_equals_reference_generate(model_fp32, reference_fp32, paged_runner):
    num_new = 40
    prompts = [random_prompt(30, seed=11), random_prompt(9, seed=12)]
    with torch.no_grad():
        expected = [
            reference_fp32.generate(
                torch.tensor([p]), max_new_tokens=num_new, do_sample=False, eos_token_id=None, pad_token_id=0
            )[0, len(p) :].tolist()
            for p in prompts
        ]
    # Both sequences share every step: prefill together, then decode together.
    runner = paged_runner(model_fp32)
    logits = runner.step([(i, p) for i, p in enumerate(prompts)])
    generated = [[int(lg[-1].argmax())] for lg in logits]
    for _ in range(num_new - 1):
        logits = runner.step([(i, [g[-1]]) for i, g in enumerate(generated)])
        for g, lg in zip(generated, logits, strict=True):
            g.append(int(lg[-1].argmax()))
    assert generated == expected
    for tokens in generated:
        assert len(set(tokens)) > num_new // 2  # the demo model does not collapse onto one token
