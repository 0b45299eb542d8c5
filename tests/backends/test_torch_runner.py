"""TorchModelRunner + engine on the demo checkpoint (CPU): invariance, prefix cache, preemption, LLM API."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch

from tkr_embed.backends.factory import DeviceUnavailableError, create_runner
from tkr_embed.backends.torch.attention import build_attention_metadata
from tkr_embed.backends.torch.runner import TorchModelRunner
from tkr_embed.engine.outputs import FinishReason
from tkr_embed.engine.sampling_params import SamplingParams
from tkr_embed.llm import LLM

torch.set_num_threads(2)
GREEDY = SamplingParams(max_tokens=4, temperature=0.0, ignore_eos=True)


@pytest.fixture(scope="module")
def runner(demo_model_dir: Path) -> TorchModelRunner:
    return create_runner(demo_model_dir, device="cpu", num_kv_blocks=96, block_size=8)


def make_llm(runner: TorchModelRunner, **engine_kwargs) -> LLM:
    # A fresh engine (empty prefix cache, full pool) over the same weights and cache tensors.
    return LLM.from_runner(runner, block_size=runner.info.block_size, **engine_kwargs)


def prompts(count: int, seed: int = 0) -> list[list[int]]:
    rng = random.Random(seed)
    return [[rng.randrange(1000, 50000) for _ in range(rng.randrange(3, 40))] for _ in range(count)]


def test_runner_info_describes_the_demo_model(runner: TorchModelRunner) -> None:
    info = runner.info
    assert (info.vocab_size, info.block_size, info.num_kv_blocks) == (201088, 8, 96)
    assert info.eos_token_ids == (200002, 199999, 200012)
    assert info.device == "cpu" and info.dtype == "float32" and info.quantization == "mxfp4"


def test_16_prompts_together_equal_each_alone(runner: TorchModelRunner) -> None:
    batch = prompts(16)
    together = make_llm(runner, max_num_batched_tokens=128).generate(batch, GREEDY)
    for prompt, result in zip(batch, together, strict=False):
        alone = make_llm(runner).generate([prompt], GREEDY)[0]
        assert result.token_ids == alone.token_ids and len(alone.token_ids) == 4


def test_lookahead_steps_take_their_tokens_from_the_previous_launch(runner: TorchModelRunner, monkeypatch) -> None:
    """The real runner fed its own samples (the CUDA path copies them on the device): the same tokens and
    logprobs as without lookahead, with most decode steps launched ahead."""
    followed = []
    launch = TorchModelRunner.launch

    def spy(self, batch, previous=None):
        followed.append(previous is not None)
        return launch(self, batch, previous)

    params = SamplingParams(max_tokens=12, temperature=0.0, logprobs=2)
    batch = prompts(3, seed=5)
    plain = make_llm(runner, lookahead=False).generate(batch, params)
    monkeypatch.setattr(TorchModelRunner, "launch", spy)
    ahead = make_llm(runner).generate(batch, params)
    assert [r.token_ids for r in ahead] == [r.token_ids for r in plain]
    logprobs = [[[lp.logprob for lp in r.outputs[0].logprobs] for r in results] for results in (ahead, plain)]
    assert logprobs[0] == logprobs[1]
    assert sum(followed) >= 8


def test_prefix_cache_gives_identical_output_and_prefills_only_new_part(runner: TorchModelRunner) -> None:
    shared = prompts(1, seed=1)[0] + prompts(1, seed=2)[0] + list(range(1000, 1020))
    second = shared + [4242, 4343, 4444]
    llm = make_llm(runner)
    llm.generate([shared + [5]], GREEDY)
    before = llm.engine.stats().prompt_tokens_prefilled
    cached_result = llm.generate([second], GREEDY)[0]
    cached = len(shared) // 8 * 8
    assert cached_result.num_cached_prompt_tokens == cached
    assert llm.engine.stats().prompt_tokens_prefilled - before == len(second) - cached
    assert (
        cached_result.token_ids == make_llm(runner, enable_prefix_caching=False).generate([second], GREEDY)[0].token_ids
    )


def test_tiny_kv_budget_preempts_and_keeps_outputs(runner: TorchModelRunner) -> None:
    batch = prompts(6, seed=3)
    params = SamplingParams(max_tokens=6, temperature=0.0, ignore_eos=True)
    llm = make_llm(runner, num_kv_blocks=8)  # 64 token slots for 6 sequences
    results = llm.generate(batch, params)
    assert llm.engine.stats().preemptions > 0
    for prompt, result in zip(batch, results, strict=False):
        assert result.token_ids == make_llm(runner).generate([prompt], params)[0].token_ids
    assert llm.engine.block_manager.num_free_blocks == 8


def test_logprobs_match_log_softmax_of_a_full_forward(runner: TorchModelRunner) -> None:
    prompt = prompts(1, seed=4)[0]
    result = make_llm(runner).generate(
        [prompt], SamplingParams(max_tokens=3, temperature=0.0, logprobs=2, ignore_eos=True)
    )[0]
    logprobs = result.outputs[0].logprobs
    assert [lp.token_id for lp in logprobs] == result.token_ids
    context = prompt + result.token_ids[:2]  # recompute the 3rd token's distribution
    blocks = list(range(80, 80 + -(-len(context) // 8)))
    metadata = build_attention_metadata([(0, len(context), blocks)], 8, "cpu")
    hidden = runner.model(torch.tensor(context), torch.arange(len(context)), runner.kv_caches, metadata)
    reference = torch.log_softmax(runner.model.compute_logits(hidden[-1:]), -1)[0]
    assert abs(logprobs[2].logprob - float(reference[result.token_ids[2]])) < 1e-4
    assert [t for t, _ in logprobs[2].top_logprobs] == reference.topk(2).indices.tolist()


def test_llm_text_prompts_n_and_seed(demo_model_dir: Path) -> None:
    llm = LLM(demo_model_dir, device="cpu", num_kv_blocks=64, block_size=16)
    params = SamplingParams(n=3, max_tokens=5, temperature=1.0, seed=11, ignore_eos=True)
    first, second = llm.generate(["Hello there", "Bonjour"], params)
    assert first.prompt_token_ids == llm.tokenizer.encode("Hello there")
    assert len(first.outputs) == 3 and len({tuple(o.token_ids) for o in first.outputs}) == 3
    assert all(o.finish_reason is FinishReason.LENGTH for o in first.outputs + second.outputs)
    assert first.text == llm.tokenizer.decode(first.token_ids)
    again = llm.generate("Hello there", params)[0]
    assert [o.token_ids for o in again.outputs] == [o.token_ids for o in first.outputs]


def test_factory_refuses_an_unavailable_device(demo_model_dir: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("CUDA is present here")
    with pytest.raises(DeviceUnavailableError, match="CUDA is not available"):
        create_runner(demo_model_dir, device="cuda")
    with pytest.raises(DeviceUnavailableError):
        create_runner(demo_model_dir, device="tpu")
    with pytest.raises(ValueError, match="q3"):
        create_runner(demo_model_dir, device="cpu", quantization="q3")


def test_factory_states_what_each_quantization_setting_means_on_torch(demo_model_dir: Path) -> None:
    q8 = create_runner(demo_model_dir, device="cpu", quantization="q8", num_kv_blocks=8)
    assert q8.info.quantization == "mxfp4"
    assert q8.info.extra["quantization_reason"].startswith("q8 on torch: experts MXFP4")
    dense = create_runner(demo_model_dir, device="cpu", quantization="none", num_kv_blocks=8)
    assert dense.info.quantization == "none"
    assert "dequantized" in dense.info.extra["quantization_reason"]


# --- penalised sampling: the histories kept on the device give the tokens the host's histories give, with
# lookahead steps launched for penalised batches, through preemption, n > 1 and engines sharing a runner

REPETITION = SamplingParams(max_tokens=16, temperature=0.0, ignore_eos=True, repetition_penalty=0.3)
COUNTED = SamplingParams(max_tokens=16, temperature=0.0, ignore_eos=True, frequency_penalty=-2.0, presence_penalty=-2.0)
GREEDY_16 = SamplingParams(max_tokens=16, temperature=0.0, ignore_eos=True)


def repetitive_prompts(count: int, seed: int) -> list[list[int]]:
    rng = random.Random(seed)
    # few distinct ids: the penalties have repeats to act on (below 1 and negative, they favour what was seen, which
    # the demo model would not otherwise repeat)
    return [[rng.randrange(1000, 1012) for _ in range(rng.randrange(6, 30))] for _ in range(count)]


def test_penalised_batches_launch_ahead_and_sample_what_the_host_histories_give(runner, monkeypatch) -> None:
    batch = repetitive_prompts(6, seed=1)
    params = [REPETITION, COUNTED, GREEDY_16, REPETITION, COUNTED, GREEDY_16]
    plain = make_llm(runner, lookahead=False).generate(batch, params)
    followed = []
    launch = TorchModelRunner.launch

    def spy(self, batch, previous=None):
        followed.append(previous is not None)
        return launch(self, batch, previous)

    monkeypatch.setattr(TorchModelRunner, "launch", spy)
    ahead = make_llm(runner).generate(batch, params)
    assert [r.token_ids for r in ahead] == [r.token_ids for r in plain]
    assert sum(followed) >= 10  # the penalised batch's decode steps went ahead
    unpenalised = make_llm(runner, lookahead=False).generate(batch, GREEDY_16)
    changed = [r.token_ids != u.token_ids for r, u in zip(plain, unpenalised, strict=True)]
    # each kind of penalty acted on a row of it; the greedy rows kept their tokens
    assert (changed[0] or changed[3]) and (changed[1] or changed[4]) and not (changed[2] or changed[5])


def test_preempted_penalised_sequences_keep_their_tokens(runner) -> None:
    batch = repetitive_prompts(6, seed=2)
    params = [REPETITION, COUNTED] * 3
    llm = make_llm(runner, num_kv_blocks=10)  # 80 token slots for 6 sequences
    results = llm.generate(batch, params)
    assert llm.engine.stats().preemptions > 0
    for prompt, p, result in zip(batch, params, results, strict=True):
        assert result.token_ids == make_llm(runner, lookahead=False).generate([prompt], p)[0].token_ids


def test_n_completions_and_a_second_engine_on_the_runner_start_from_their_own_histories(runner) -> None:
    prompt = repetitive_prompts(1, seed=3)[0]
    two = SamplingParams(max_tokens=12, temperature=0.0, ignore_eos=True, n=2, repetition_penalty=0.3)
    one = SamplingParams(max_tokens=12, temperature=0.0, ignore_eos=True, repetition_penalty=0.3)
    expected = make_llm(runner, lookahead=False).generate([prompt], one)[0].token_ids
    result = make_llm(runner).generate([prompt], two)[0]
    assert [c.token_ids for c in result.outputs] == [expected, expected]
    # An engine dropped mid-request leaves its sequences' histories behind; a new engine's sequences never
    # read them.
    abandoned = make_llm(runner)
    abandoned.engine.add_request("left", prompt, one)
    for _ in range(4):
        planned = abandoned.engine.plan_step()
        launched = abandoned.engine.launch(*planned)
        abandoned.engine.postprocess(launched.batch, launched.finish())
    assert make_llm(runner).generate([prompt], one)[0].token_ids == expected
