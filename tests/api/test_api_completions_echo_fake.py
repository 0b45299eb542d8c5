"""/v1/completions with echo: the prompt's own logprobs (what lm-eval scores with), max_tokens 0, token-id prompts.

The fake engine scores prompt token i at -i/10 and always has a better alternative (the next id, at -0.05)."""

from __future__ import annotations

import json
from itertools import accumulate

import httpx
from lm_eval.models.openai_completions import LocalCompletionsAPI

PROMPT = "The quick brown fox jumps"


def complete(base_url: str, **body) -> httpx.Response:
    return httpx.post(base_url + "/v1/completions", json={"model": "gpt-oss-fake", **body}, timeout=30)


def expected_prompt_logprobs(tokenizer, prompt_ids: list[int]) -> dict:
    tokens = [tokenizer.decode([token_id]) for token_id in prompt_ids]
    return {
        "tokens": tokens,
        "token_logprobs": [None] + [-position / 10 for position in range(1, len(prompt_ids))],
        "top_logprobs": [None]
        + [
            {tokenizer.decode([token_id + 1]): -0.05, tokenizer.decode([token_id]): -position / 10}
            for position, token_id in enumerate(prompt_ids[1:], start=1)
        ],
        "text_offset": [0, *accumulate(len(token) for token in tokens[:-1])],
    }


def test_echo_with_max_tokens_0_scores_the_prompt_without_generating(base_url, fake, tokenizer):
    prompt_ids = tokenizer.encode(PROMPT)
    response = complete(base_url, prompt=PROMPT, echo=True, logprobs=1, max_tokens=0, temperature=0)
    assert response.status_code == 200, response.text
    choice = response.json()["choices"][0]
    assert (choice["text"], choice["finish_reason"]) == (PROMPT, "length")
    assert choice["logprobs"] == expected_prompt_logprobs(tokenizer, prompt_ids)
    usage = response.json()["usage"]
    assert (usage["prompt_tokens"], usage["completion_tokens"]) == (len(prompt_ids), 0)
    submitted = fake.submitted[0]
    assert (submitted.params.max_tokens, submitted.params.prompt_logprobs) == (0, 1)


def test_echo_puts_the_prompt_logprobs_before_the_generated_ones(base_url, fake, tokenizer):
    answer = tokenizer.encode(" over the dog")
    fake.script = lambda prompt, params: answer
    prompt_ids = tokenizer.encode(PROMPT)
    response = complete(base_url, prompt=PROMPT, echo=True, logprobs=2, max_tokens=2)
    choice = response.json()["choices"][0]
    generated = [tokenizer.decode([token_id]) for token_id in answer[:2]]
    assert choice["text"] == PROMPT + "".join(generated)
    logprobs = choice["logprobs"]
    num_prompt = len(prompt_ids)
    assert logprobs["tokens"] == [tokenizer.decode([t]) for t in prompt_ids] + generated
    assert logprobs["token_logprobs"][num_prompt:] == [-0.5, -0.5]
    # The generated tokens' offsets index the echoed text; each token's own logprob sits among its top ones.
    assert logprobs["text_offset"][num_prompt:] == [len(PROMPT), len(PROMPT) + len(generated[0])]
    assert logprobs["top_logprobs"][num_prompt] == {generated[0]: -0.5, tokenizer.decode([answer[0] + 1]): -1.5}


def test_max_tokens_0_without_echo_is_refused(base_url, fake):
    response = complete(base_url, prompt=PROMPT, max_tokens=0)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == "max_tokens" and "echo" in error["message"]
    assert fake.submitted == []


def test_echo_without_logprobs_returns_the_text_only(base_url, fake):
    response = complete(base_url, prompt=PROMPT, echo=True, max_tokens=0)
    choice = response.json()["choices"][0]
    assert (choice["text"], choice["logprobs"]) == (PROMPT, None)
    assert fake.submitted[0].params.prompt_logprobs is None


def test_token_id_prompts_are_scored_as_given(base_url, fake, tokenizer):
    first, second = tokenizer.encode("Hello there"), tokenizer.encode(" general Kenobi")
    # lm-eval sends one prompt as a list holding one list of ids; a flat list is one prompt too.
    for prompt in ([first], first):
        fake.reset()
        response = complete(base_url, prompt=prompt, echo=True, logprobs=1, max_tokens=0)
        choice = response.json()["choices"][0]
        assert fake.submitted[0].prompt_token_ids == first
        assert choice["text"] == "Hello there"
        assert choice["logprobs"] == expected_prompt_logprobs(tokenizer, first)
    response = complete(base_url, prompt=[first, second], echo=True, logprobs=1, max_tokens=0)
    choices = sorted(response.json()["choices"], key=lambda choice: choice["index"])
    assert [choice["text"] for choice in choices] == ["Hello there", " general Kenobi"]
    assert [choice["logprobs"] for choice in choices] == [
        expected_prompt_logprobs(tokenizer, first),
        expected_prompt_logprobs(tokenizer, second),
    ]


def test_a_token_id_outside_the_vocabulary_is_a_400(base_url, fake):
    response = complete(base_url, prompt=[[1, 2, 201088]], echo=True, logprobs=1, max_tokens=0)
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "prompt"
    assert fake.submitted == []


def test_streamed_echo_sends_the_prompt_logprobs_first(base_url, fake, tokenizer):
    answer = tokenizer.encode(" over")
    fake.script = lambda prompt, params: answer + [200002]
    prompt_ids = tokenizer.encode(PROMPT)
    body = {"model": "gpt-oss-fake", "prompt": PROMPT, "echo": True, "logprobs": 1, "max_tokens": 1, "stream": True}
    with httpx.stream("POST", base_url + "/v1/completions", json=body, timeout=30) as response:
        events = [line.removeprefix("data: ") for line in response.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(event)["choices"][0] for event in events[:-1]]
    assert chunks[0]["text"] == PROMPT
    assert chunks[0]["logprobs"] == expected_prompt_logprobs(tokenizer, prompt_ids)
    assert chunks[1]["text"] == tokenizer.decode(answer)
    assert chunks[1]["logprobs"]["token_logprobs"] == [-0.5]
    assert chunks[1]["logprobs"]["text_offset"] == [len(PROMPT)]


def test_lm_eval_reads_the_continuation_logprobs(base_url, fake, tokenizer):
    # lm-eval asks for one generated token, and drops it: it sums token_logprobs[ctxlen:-1].
    context, continuation = tokenizer.encode("Paris is the capital of"), tokenizer.encode(" France")
    fake.script = lambda prompt, params: [200002]
    # The body lm-eval's local-completions sends for a loglikelihood request (its _create_payload).
    body = {"prompt": [context + continuation], "temperature": 0, "max_tokens": 1, "logprobs": 1, "echo": True}
    response = httpx.post(base_url + "/v1/completions", json={**body, "seed": 1234}, timeout=30)
    assert response.status_code == 200, response.text
    [(loglikelihood, is_greedy)] = LocalCompletionsAPI.parse_logprobs(response.json(), ctxlens=[len(context)])
    positions = range(len(context), len(context) + len(continuation))
    assert loglikelihood == sum(-position / 10 for position in positions)
    assert is_greedy is False  # the fake's alternative always beats the prompt token
