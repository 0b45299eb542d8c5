"""A key's reasoning-token cap on the real server and engine (the demo checkpoint's random weights, which reason
at random and rarely end their own analysis): with the cap, no answer reasons past it and each one that reached
it still gets its final answer, plain or JSON; the key's usage rows count the reasoning as the responses report
it. Without a cap, the same structured requests reason longer (up to half of max_tokens): the cap ended them."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from server_process import ServerProcess, demo_env, free_port, server_process

MASTER_KEY = "master-key-0123456789-reasoning-cap"
CAP = 6
MAX_TOKENS = 40
SEEDS = range(6)
SCHEMA = {
    "type": "object",
    "properties": {"ok": {"type": "boolean"}},
    "required": ["ok"],
    "additionalProperties": False,
}


@pytest.fixture(scope="module")
def server(demo_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    workdir = tmp_path_factory.mktemp("reasoning-cap")
    port = free_port()
    env = demo_env(
        demo_model_dir, workdir / "data", port, GENERATION_AUTH_ENABLED="true", GENERATION_API_KEY=MASTER_KEY
    )
    with server_process(workdir, env, port) as running:
        running.wait_healthy()
        yield running


@pytest.fixture(scope="module")
def capped_key(server: ServerProcess) -> dict:
    created = httpx.post(
        server.url + "/admin/api-keys",
        headers={"Authorization": f"Bearer {MASTER_KEY}"},
        json={"name": "capped", "reasoning": {"max_reasoning_tokens": CAP}},
    )
    assert created.status_code == 201, created.text
    return created.json()


def _client(server: ServerProcess, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0, timeout=300)


def _ask(client: openai.OpenAI, seed: int, **extra: object):  # noqa: ANN202 (the SDK's completion type)
    return client.chat.completions.create(
        model=client.models.list().data[0].id,
        messages=[{"role": "user", "content": f"Question {seed}: why?"}],
        max_tokens=MAX_TOKENS,
        temperature=1.0,
        seed=seed,
        **extra,
    )


def test_the_cap_ends_the_reasoning_and_the_answer_follows(server: ServerProcess, capped_key: dict) -> None:
    capped, free = _client(server, capped_key["api_key"]), _client(server, MASTER_KEY)
    capped_reasoning = []
    for seed in SEEDS:
        answer = _ask(capped, seed)
        reasoning = answer.usage.completion_tokens_details.reasoning_tokens
        capped_reasoning.append(reasoning)
        assert reasoning <= CAP
        if reasoning == CAP:  # the cap ended it: the final channel was opened and written
            assert answer.choices[0].message.content
    assert CAP in capped_reasoning  # random weights reason until stopped

    # With a JSON schema, an uncapped request reasons up to half of max_tokens; the capped key's stop at the cap
    # and their answers are still JSON of the schema.
    response_format = {"type": "json_schema", "json_schema": {"name": "ok", "schema": SCHEMA, "strict": True}}
    uncapped = [_ask(free, seed, response_format=response_format) for seed in SEEDS]
    assert max(answer.usage.completion_tokens_details.reasoning_tokens for answer in uncapped) > CAP
    for seed in SEEDS:
        answer = _ask(capped, seed, response_format=response_format)
        reasoning = answer.usage.completion_tokens_details.reasoning_tokens
        assert reasoning <= CAP
        assert json.loads(answer.choices[0].message.content)["ok"] in (True, False)
        capped_reasoning.append(reasoning)

    # The key's usage rows count what the responses reported.
    deadline = time.monotonic() + 10
    while True:
        usage = httpx.get(
            server.url + "/admin/usage",
            headers={"Authorization": f"Bearer {MASTER_KEY}"},
            params={"key_id": capped_key["id"], "days": 1},
        ).json()["data"][0]
        if usage["days"] and usage["days"][0]["requests"] == len(capped_reasoning) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert usage["days"][0]["reasoning_tokens"] == sum(capped_reasoning)
