"""The response cache is bounded in bytes, not only in entries: over a live server, the least recently used
answers are evicted once the stored JSON outgrows cache.max_bytes, and an answer larger than
cache.max_entry_bytes is never stored (each repeat of it reaches the engine)."""

from __future__ import annotations

import sys
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).parents[1] / "gateway"))

from gateway_support import gateway_server  # noqa: E402

from tkr_embed.harmony.tokenizer import get_tokenizer  # noqa: E402

MAX_BYTES = 32 * 1024
MAX_ENTRY_BYTES = 12 * 1024


def test_the_cache_keeps_within_its_bytes_and_refuses_oversized_answers(tmp_path: Path) -> None:
    tok = get_tokenizer()
    answers = {"small": tok.encode(" word" * 1_000), "huge": tok.encode(" word" * 4_000)}  # ~5 KB, ~20 KB
    cache = {"enabled": True, "max_size": 1000, "max_bytes": MAX_BYTES, "max_entry_bytes": MAX_ENTRY_BYTES}
    with gateway_server(tmp_path, cache=cache) as server:
        server.engine.script = lambda prompt, params: answers["huge" if tok.decode(prompt) == "huge" else "small"]
        headers = {"X-API-Key": server.create_key("cache-bytes")["api_key"]}

        def complete(prompt: str) -> httpx.Response:
            body = {"prompt": prompt, "temperature": 0, "max_tokens": 4_000}
            response = httpx.post(server.url + "/v1/completions", json=body, headers=headers, timeout=60)
            assert response.status_code == 200, response.text
            return response

        sizes = [len(complete(f"prompt {i}").content) for i in range(12)]  # 12 x ~5 KB: over 32 KB
        assert 4_000 < min(sizes) and max(sizes) < MAX_ENTRY_BYTES
        assert complete("prompt 11").headers["x-cache"] == "hit"  # the most recent answers stay
        assert complete("prompt 0").headers["x-cache"] == "miss"  # the oldest were evicted for bytes
        cached = server.extension.gateway.cache
        assert cached is not None and cached.bytes <= MAX_BYTES and len(cached) < 12

        first = complete("huge")
        assert len(first.content) > MAX_ENTRY_BYTES and first.headers["x-cache"] == "miss"
        submitted = len(server.engine.submitted)
        assert complete("huge").headers["x-cache"] == "miss"  # never stored: the engine answers again
        assert len(server.engine.submitted) == submitted + 1
