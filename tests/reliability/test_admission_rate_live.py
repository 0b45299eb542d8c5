"""Over a live server, a key's rate limits are charged by what each request starts: one request of 64 prompts
x n=2 uses 128 requests of a 200/minute key, and its prompt + max_tokens count in tokens per minute."""

from __future__ import annotations

import sys
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).parents[1] / "gateway"))

from gateway_support import gateway_server  # noqa: E402


def test_64_prompts_x_n2_use_128_requests_and_their_tokens(tmp_path: Path) -> None:
    rate_limit = {"enabled": True, "burst": 1000, "requests_per_minute": 200, "tokens_per_minute": 100_000}
    with gateway_server(tmp_path, rate_limit=rate_limit) as server:
        server.engine.max_waiting = 1000  # 64 engine requests at once
        key = {"X-API-Key": server.create_key("fan-out")["api_key"]}

        def complete(body: dict) -> httpx.Response:
            return httpx.post(server.url + "/v1/completions", json=body, headers=key, timeout=60)

        wide = complete({"prompt": ["hi"] * 64, "n": 2, "max_tokens": 4})
        assert wide.status_code == 200 and len(wide.json()["choices"]) == 128
        single = complete({"prompt": "hi", "max_tokens": 4})
        assert single.headers["x-ratelimit-remaining-requests"] == str(200 - 128 - 1)
        # 64 prompts x n=2 x (1 prompt token + max_tokens 4), charged before the engine started them (the headers
        # are those of the single request's own door check).
        assert int(single.headers["x-ratelimit-remaining-tokens"]) == 100_000 - 128 * 5
        refused = complete({"prompt": ["hi"] * 64, "n": 2, "max_tokens": 4})  # 128 more than the 71 left
        assert refused.status_code == 429 and refused.json()["error"]["code"] == "rate_limit_exceeded"
        assert int(refused.headers["retry-after"]) >= 1
        assert complete({"prompt": "hi", "max_tokens": 4}).status_code == 200  # the refusal consumed nothing
