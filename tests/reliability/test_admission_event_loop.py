"""No request stalls the event loop: while huge requests are refused or prepared, every concurrent /health
answers within 100 ms (the slowest sample counts: a stalled loop shows as one long sample; of up to three runs of the
same work, the best counts, as a stall the server causes repeats and a busy machine's does not). A live server on
the demo checkpoint, in its own process, so the client's timings are not the server's."""

from __future__ import annotations

import json
import random
import string
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "api"))

from server_process import demo_env, free_port, server_process  # noqa: E402

HEALTH_BOUND_S = 0.100
WARM_UP = {
    "/v1/responses": {"input": "hi", "max_output_tokens": 1},
    "/v1/completions": {"prompt": "hi", "max_tokens": 1},
    "/v1/chat/completions": {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 1},
}


@pytest.fixture(scope="module")
def server(demo_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("admission-loop")
    port = free_port()
    env = demo_env(
        demo_model_dir,
        tmp / "data",
        port,
        GENERATION_LOG_LEVEL="warning",
        GENERATION_ENGINE__KV_CACHE_BLOCKS="256",
        GENERATION_ENGINE__MAX_NUM_SEQS="4",
        OMP_NUM_THREADS="1",
    )
    with server_process(tmp, env, port) as process:
        process.wait_healthy(timeout_s=180)
        # One small request of each kind first: the first use of a route builds its validators once.
        for path, body in WARM_UP.items():
            assert httpx.post(process.url + path, json=body, timeout=120).status_code == 200
        yield process.url


ATTEMPTS = 3


def slowest_health_while(url: str, work: Callable[[], list[httpx.Response]]) -> tuple[float, list[httpx.Response]]:
    """Run `work` while probing /health back to back: the slowest probe and what `work` returned. A stall the server
    causes comes back every time the work runs; a slow probe that a busy machine caused does not, so the work runs
    again, up to ATTEMPTS times, until one run keeps every probe within the bound."""
    slowest, responses = _slowest_health_once(url, work)
    for _ in range(ATTEMPTS - 1):
        if slowest < HEALTH_BOUND_S:
            break
        again, responses = _slowest_health_once(url, work)
        slowest = min(slowest, again)
    return slowest, responses


def _slowest_health_once(url: str, work: Callable[[], list[httpx.Response]]) -> tuple[float, list[httpx.Response]]:
    done = threading.Event()
    samples: list[float] = []

    def probe() -> None:
        with httpx.Client(base_url=url, timeout=30) as client:
            while not done.is_set():
                started = time.perf_counter()
                assert client.get("/health").status_code == 200
                samples.append(time.perf_counter() - started)
                time.sleep(0.005)

    prober = threading.Thread(target=probe)
    prober.start()
    try:
        time.sleep(0.2)  # a few samples before the load
        responses = work()
        time.sleep(0.1)
    finally:
        done.set()
        prober.join()
    assert len(samples) > 10
    return max(samples), responses


def concurrently(*requests: Callable[[], httpx.Response]) -> list[httpx.Response]:
    with ThreadPoolExecutor(len(requests)) as pool:
        return list(pool.map(lambda request: request(), requests))


def post(url: str, path: str, body: bytes) -> Callable[[], httpx.Response]:
    headers = {"Content-Type": "application/json"}
    return lambda: httpx.post(url + path, content=body, headers=headers, timeout=120)


def words(num_chars: int, seed: int) -> str:
    rng = random.Random(seed)
    text: list[str] = []
    size = 0
    while size < num_chars:
        word = "".join(rng.choices(string.ascii_lowercase, k=rng.randint(2, 9)))
        text.append(word)
        size += len(word) + 1
    return " ".join(text)[:num_chars]


def test_a_60000_item_responses_body_is_refused_at_once_and_health_stays_fast(server: str) -> None:
    items = [{"role": "user", "content": f"m{i}"} for i in range(60_000)]
    body = json.dumps({"input": items}).encode()
    assert len(body) > 1_300_000
    slowest, (refused,) = slowest_health_while(server, lambda: concurrently(post(server, "/v1/responses", body)))
    assert refused.status_code == 400
    error = refused.json()["error"]
    assert error["param"] == "input" and "2048" in error["message"] and "60000" in error["message"]
    assert slowest < HEALTH_BOUND_S, f"/health took {slowest * 1000:.0f} ms"


def test_four_prompts_of_3_9_mb_are_refused_by_size_and_health_stays_fast(server: str) -> None:
    body = json.dumps({"prompt": words(3_900_000, 0), "max_tokens": 1}).encode()
    slowest, refused = slowest_health_while(
        server, lambda: concurrently(*(post(server, "/v1/completions", body) for _ in range(4)))
    )
    assert [r.status_code for r in refused] == [400] * 4
    error = refused[0].json()["error"]
    assert error["param"] == "prompt" and "max_prompt_chars" in error["message"]
    assert slowest < HEALTH_BOUND_S, f"/health took {slowest * 1000:.0f} ms"


def test_prompts_within_the_limits_are_tokenized_and_rendered_off_the_event_loop(server: str) -> None:
    # Four 1 MB prompts (just within max_prompt_chars) and two 2,000-message chats: seconds of tokenizing and
    # rendering, all of it refused only afterwards (the demo model's context is 4,096 tokens).
    prompt = json.dumps({"prompt": words(1_000_000, 1), "max_tokens": 1}).encode()
    messages = [{"role": "user", "content": words(400, i)} for i in range(2000)]
    chat = json.dumps({"messages": messages, "max_tokens": 1}).encode()
    requests = [post(server, "/v1/completions", prompt) for _ in range(4)]
    requests += [post(server, "/v1/chat/completions", chat) for _ in range(2)]
    slowest, answered = slowest_health_while(server, lambda: concurrently(*requests))
    assert [r.status_code for r in answered] == [400] * 6
    # Refused only once tokenized: the prompt is longer than the context, or than max_prompt_tokens.
    assert {r.json()["error"]["code"] for r in answered} <= {"context_length_exceeded", "prompt_too_large"}
    assert slowest < HEALTH_BOUND_S, f"/health took {slowest * 1000:.0f} ms"
