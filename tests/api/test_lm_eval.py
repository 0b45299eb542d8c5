"""lm-eval, as its users run it, against the real server on the demo checkpoint.

Its `local-completions` model in its default set-up finds our /tokenizer_info and /tokenize (its remote tokenizer),
sends each context + continuation as token ids with echo, logprobs 1 and one generated token, and sums the echoed
continuation's token_logprobs. A tiny multiple-choice task (a task YAML and a JSON-lines file, no network) is scored
that way; every loglikelihood it computed must be the engine's own logprobs of the same tokens, computed apart by the
offline LLM. Before issue 20 every choice scored 0 and the first one won.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from server_process import ServerProcess, healthy_demo_server

from tkr_embed import LLM
from tkr_embed.engine.outputs import TokenLogprob
from tkr_embed.engine.sampling_params import SamplingParams
from tkr_embed.harmony.tokenizer import get_tokenizer

pytestmark = pytest.mark.slow

TASK = "tkr_tiny_mc"
# (question, choices, index of the right one)
QUESTIONS = [
    ("What is the capital of France?", ["Paris", "Berlin", "Madrid"], 0),
    ("Which animal barks?", ["a cat", "a dog"], 1),
    ("How many legs has a spider?", ["six", "eight", "ten"], 1),
]
TASK_YAML = """\
task: {task}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{context}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{answer}}}}"
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
"""
# The offline engine batches differently from the server's (and the server reuses cached prefixes), so the same
# logprob can differ in float32's last bits; a token dropped or shifted changes a sum by far more than this.
TOLERANCE = 1e-3


def context_of(question: str) -> str:
    return f"Question: {question}\nAnswer:"


@pytest.fixture(scope="module")
def server(demo_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with healthy_demo_server(demo_model_dir, tmp_path_factory.mktemp("lm-eval-server")) as running:
        yield running


@pytest.fixture(scope="module")
def llm(demo_model_dir: Path) -> LLM:
    return LLM(demo_model_dir, device="cpu", num_kv_blocks=64)


@pytest.fixture(scope="module")
def docs(llm: LLM) -> list[dict]:
    """The questions as the task's documents; the first also gets the model's own greedy answer as a choice, so
    that lm-eval's is_greedy (read from our top_logprobs) is true somewhere."""
    tokenizer = get_tokenizer()
    context = tokenizer.encode(context_of(QUESTIONS[0][0]))
    [greedy] = llm.generate(context, SamplingParams(temperature=0, max_tokens=1))[0].token_ids
    answer = tokenizer.decode([greedy])
    # lm-eval writes " " + choice after the context: the token must spell " <choice>" and stay whole when re-encoded.
    assert answer.startswith(" ") and tokenizer.encode(context_of(QUESTIONS[0][0]) + answer) == [*context, greedy]
    questions = [(QUESTIONS[0][0], [*QUESTIONS[0][1], answer[1:]], QUESTIONS[0][2]), *QUESTIONS[1:]]
    return [{"context": context_of(q), "choices": choices, "answer": right} for q, choices, right in questions]


@pytest.fixture(scope="module")
def lm_eval_run(server: ServerProcess, docs: list[dict], tmp_path_factory: pytest.TempPathFactory) -> dict:
    """lm-eval's command line on the task: its stderr, its results and its samples by document."""
    workdir = tmp_path_factory.mktemp("lm-eval")
    data = workdir / "tiny_mc.jsonl"
    data.write_text("".join(json.dumps(doc) + "\n" for doc in docs))
    (workdir / "tasks").mkdir()
    (workdir / "tasks" / f"{TASK}.yaml").write_text(TASK_YAML.format(task=TASK, data=data))
    model = httpx.get(server.url + "/v1/models", timeout=30).json()["data"][0]["id"]
    offline = {"HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    env = {**os.environ, **offline, "HF_HOME": str(workdir / "hf")}
    command = [
        sys.executable,
        "-m",
        "lm_eval",
        "--model",
        "local-completions",
        "--model_args",
        f"model={model},base_url={server.url}/v1/completions,num_concurrent=1,max_retries=1",
        "--tasks",
        TASK,
        "--include_path",
        str(workdir / "tasks"),
        "--output_path",
        str(workdir / "out"),
        "--log_samples",
    ]
    finished = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600, cwd=workdir)
    assert finished.returncode == 0, finished.stderr[-4000:]
    [results] = (workdir / "out").glob("**/results_*.json")
    [samples] = (workdir / "out").glob(f"**/samples_{TASK}_*.jsonl")
    by_doc = {sample["doc_id"]: sample for sample in map(json.loads, samples.read_text().splitlines())}
    return {"stderr": finished.stderr, "results": json.loads(results.read_text()), "samples": by_doc}


@pytest.fixture(scope="module")
def engine_scores(llm: LLM, docs: list[dict]) -> list[list[tuple[float, bool]]]:
    """Each choice's (loglikelihood, is_greedy) from the engine's prompt logprobs of context + " " + choice, split
    into tokens as lm-eval splits them: the context's tokens, then the rest of the whole text's."""
    tokenizer = get_tokenizer()
    prompts, spans = [], []
    for doc in docs:
        context = tokenizer.encode(doc["context"])
        for choice in doc["choices"]:
            whole = tokenizer.encode(f"{doc['context']} {choice}")
            assert whole[: len(context)] == context
            prompts.append(whole)
            spans.append(len(context))
    results = llm.generate(prompts, SamplingParams(max_tokens=0, prompt_logprobs=1))

    def score(entries: list[TokenLogprob]) -> tuple[float, bool]:
        greedy = all(entry.top_logprobs[0][0] == entry.token_id for entry in entries)
        return sum(entry.logprob for entry in entries), greedy

    scores = [score(result.prompt_logprobs[start:]) for result, start in zip(results, spans, strict=True)]
    counts = [len(doc["choices"]) for doc in docs]
    return [scores[sum(counts[:i]) : sum(counts[: i + 1])] for i in range(len(docs))]


def test_lm_eval_finds_our_tokenizer_endpoints(lm_eval_run: dict) -> None:
    # Its default set-up: without them it loads a Hugging Face tokenizer named after the model (the network).
    assert "Using remote tokenizer backend" in lm_eval_run["stderr"]


def test_its_loglikelihoods_are_the_engines_logprobs(
    lm_eval_run: dict, engine_scores: list[list[tuple[float, bool]]]
) -> None:
    for doc_id, expected in enumerate(engine_scores):
        computed = [(float(ll), greedy == "True") for ll, greedy in lm_eval_run["samples"][doc_id]["filtered_resps"]]
        assert [greedy for _, greedy in computed] == [greedy for _, greedy in expected]
        assert [ll for ll, _ in computed] == pytest.approx([ll for ll, _ in expected], abs=TOLERANCE)
        assert all(ll < 0 for ll, _ in computed)  # scored, not the 0 that echo without logprobs gave
    # The model's own greedy answer, added as the last choice of the first question, is greedy to lm-eval too.
    assert engine_scores[0][-1][1] is True


def test_its_accuracy_is_what_the_engines_logprobs_give(
    lm_eval_run: dict, docs: list[dict], engine_scores: list[list[tuple[float, bool]]]
) -> None:
    picks = [max(range(len(scores)), key=lambda i: scores[i][0]) for scores in engine_scores]
    expected = sum(pick == doc["answer"] for pick, doc in zip(picks, docs, strict=True)) / len(docs)
    assert lm_eval_run["results"]["results"][TASK]["acc,none"] == pytest.approx(expected)
