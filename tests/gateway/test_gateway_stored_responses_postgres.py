"""Two server processes (the real `serve()`) sharing one PostgreSQL database: a response stored through one
replica is continued, read, listed and deleted through the other, and stays its owner's alone."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import openai
import pytest
from gateway_support import MASTER_KEY, Replica, running_replicas
from postgres_support import postgres_cluster_url

from tkr_embed.harmony.render import render_chat
from tkr_embed.harmony.types import ChatMessage


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    yield from postgres_cluster_url()


@pytest.fixture(scope="module")
def replicas(tmp_path_factory: pytest.TempPathFactory, postgres_url: str) -> Iterator[list[Replica]]:
    env = {"GENERATION_DATABASE_URL": postgres_url, "GENERATION_RATE_LIMIT_ENABLED": "false"}
    with running_replicas([tmp_path_factory.mktemp(f"pg-replica-{name}") for name in "ab"], env) as started:
        yield started


def test_replicas_share_stored_responses(replicas: list[Replica]) -> None:
    a, b = replicas
    admin = {"Authorization": f"Bearer {MASTER_KEY}"}
    key_a, key_b = (
        httpx.post(a.url + "/admin/api-keys", headers=admin, json={"name": name}, timeout=30).json()["api_key"]
        for name in ("pg-tenant-a", "pg-tenant-b")
    )
    on_a = openai.OpenAI(base_url=a.url + "/v1", api_key=key_a, max_retries=0, timeout=30)
    on_b = openai.OpenAI(base_url=b.url + "/v1", api_key=key_a, max_retries=0, timeout=30)

    first = on_a.responses.create(input="Hello from replica A")
    second = on_b.responses.create(previous_response_id=first.id, input="Hello from replica B")
    # serve_fake_engine.py answers "Hi" after the reasoning "hmm", which the finished turn no longer carries.
    expected = render_chat(
        [
            ChatMessage(role="user", content="Hello from replica A"),
            ChatMessage(role="assistant", content="Hi"),
            ChatMessage(role="user", content="Hello from replica B"),
        ],
        reasoning_effort=first.reasoning.effort,
    )
    assert second.usage.input_tokens == len(expected.token_ids)

    assert on_a.responses.retrieve(second.id).model_dump() == second.model_dump()
    assert [item.content[0].text for item in on_a.responses.input_items.list(second.id)] == ["Hello from replica B"]
    stranger = openai.OpenAI(base_url=b.url + "/v1", api_key=key_b, max_retries=0, timeout=30)
    for attempt in (lambda: stranger.responses.retrieve(first.id), lambda: stranger.responses.delete(first.id)):
        with pytest.raises(openai.NotFoundError):
            attempt()
    for odd_id in ("resp_%00", "resp_" + "0" * 300):  # no id the database could choke on reaches it
        answer = httpx.get(f"{a.url}/v1/responses/{odd_id}", headers={"X-API-Key": key_a}, timeout=30)
        assert answer.status_code == 404 and answer.json()["error"]["code"] == "response_not_found"
    on_b.responses.delete(first.id)
    with pytest.raises(openai.NotFoundError):
        on_a.responses.retrieve(first.id)
    assert on_b.responses.retrieve(second.id).previous_response_id == first.id  # a continuation outlives its parent
