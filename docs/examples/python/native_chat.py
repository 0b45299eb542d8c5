"""The original API with plain httpx: POST /chat (the answer in `text`, the reasoning apart in `reasoning`).

BASE_URL=http://127.0.0.1:8008 API_KEY=... python docs/examples/python/native_chat.py
"""

import os

import httpx

BASE_URL = os.environ.get("BASE_URL", "http://127.0.0.1:8008")
API_KEY = os.environ.get("API_KEY", "")
MAX_TOKENS = int(os.environ.get("MAX_TOKENS", "512"))

response = httpx.post(
    f"{BASE_URL}/chat",
    headers={"X-API-Key": API_KEY} if API_KEY else {},  # or Authorization: Bearer <key>, or ?api_key=<key>
    json={
        "messages": [{"role": "user", "content": "Name three primary colours."}],
        "system_prompt": "You are a concise assistant.",
        "max_tokens": MAX_TOKENS,
        "temperature": 0.7,
        "reasoning_level": "low",
    },
    timeout=300,
)
if response.status_code != 200:
    error = response.json()["error"]
    raise SystemExit(f"HTTP {response.status_code} {error['type']}: {error['message']} (param {error['param']})")
body = response.json()
print("request id:", response.headers["X-Request-ID"])
print("reasoning:", body["reasoning"])
print("answer:", body["text"])
print("finish_reason:", body["finish_reason"], "tokens:", body["tokens_generated"], "usage:", body["usage"])
