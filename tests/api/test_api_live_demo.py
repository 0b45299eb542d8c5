"""The real server: uvicorn + the real engine over the demo checkpoint (written on first start)."""

from __future__ import annotations

import concurrent.futures
from collections.abc import Iterator

import httpx
import openai
import pytest
import torch

from live_server import live_server
from tkr_embed.api.server import create_app
from tkr_embed.config import Settings

HELLO = [{"role": "user", "content": "Hello"}]


# The same suite runs on both CPU backends: torch (the reference) and MLX (mlx-cpu on Linux).
BACKENDS = {"torch": {"device": "cpu"}, "mlx": {"device": "mlx", "quantization": "none"}}


@pytest.fixture(scope="module", params=sorted(BACKENDS))
def demo_server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Settings]]:
    torch.set_num_threads(2)
    data_dir = tmp_path_factory.mktemp("live-data")
    settings = Settings(
        model=BACKENDS[request.param],           # no model path: the demo checkpoint is written and served
        engine={"max_num_seqs": 1, "max_waiting": 1, "kv_cache_blocks": 256},
        storage={"data_dir": str(data_dir)},
    )
    with live_server(create_app(settings)) as url:
        yield url, settings


@pytest.fixture
def client(demo_server) -> openai.OpenAI:
    return openai.OpenAI(base_url=demo_server[0] + "/v1", api_key="unused", max_retries=0, timeout=120)


def test_demo_checkpoint_is_written_and_announced(demo_server):
    url, settings = demo_server
    assert (settings.demo_model_dir / "config.json").is_file()
    info = httpx.get(url + "/info").json()
    assert info["demo_model"] is True
    assert info["model_path"] == str(settings.demo_model_dir)
    assert info["device"] in ("cpu", "mlx:cpu") and info["vocab_size"] == 201088 and info["context_length"] > 0
    assert info["device"].startswith("mlx") == (settings.model.device == "mlx")
    assert info["quantization_reason"]        # what the quantization setting chose, and why


def test_chat_completion_greedy_is_reproducible(client):
    first = client.chat.completions.create(model=client.models.list().data[0].id, messages=HELLO,
                                           max_tokens=6, temperature=0)
    second = client.chat.completions.create(messages=HELLO, max_tokens=6, temperature=0, model=first.model)
    assert first.usage.completion_tokens <= 6 and first.usage.prompt_tokens > 10
    assert first.choices[0].finish_reason in ("length", "stop")
    assert first.choices[0].message.content == second.choices[0].message.content
    assert first.usage.completion_tokens == second.usage.completion_tokens


def test_chat_stream_with_usage(client):
    model = client.models.list().data[0].id
    chunks = list(client.chat.completions.create(model=model, messages=HELLO, max_tokens=5, temperature=0,
                                                 stream=True, stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices == [] and 1 <= chunks[-1].usage.completion_tokens <= 5


def test_completions_and_native_generate(client, demo_server):
    model = client.models.list().data[0].id
    completion = client.completions.create(model=model, prompt="The sky is", max_tokens=4, temperature=0, seed=1)
    assert completion.usage.completion_tokens == 4 and completion.choices[0].finish_reason == "length"
    generated = httpx.post(demo_server[0] + "/generate", json={"text": "Hi", "max_tokens": 4, "temperature": 0}, timeout=120)
    assert generated.status_code == 200
    assert generated.json()["tokens_generated"] <= 4


def test_max_tokens_beyond_the_context(demo_server):
    context = httpx.get(demo_server[0] + "/info").json()["context_length"]
    response = httpx.post(demo_server[0] + "/v1/chat/completions", json={"messages": HELLO, "max_tokens": context})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "max_tokens"


def test_full_queue_answers_503(demo_server):
    body = {"prompt": "Count", "max_tokens": 48, "temperature": 0}

    def send(_: int) -> httpx.Response:
        return httpx.post(demo_server[0] + "/v1/completions", json=body, timeout=120)

    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        responses = list(pool.map(send, range(6)))
    codes = sorted(r.status_code for r in responses)
    assert 200 in codes and 503 in codes, codes
    refused = next(r for r in responses if r.status_code == 503)
    assert int(refused.headers["retry-after"]) >= 1
    assert refused.json()["error"]["code"] == "server_overloaded"
