"""Read the Server-Sent Events by hand with httpx: the original POST /stream and POST /v1/responses.

BASE_URL=http://127.0.0.1:8008 API_KEY=... python docs/examples/streaming/raw_sse.py
"""

import json
import os

import httpx

BASE_URL = os.environ.get("BASE_URL", "http://127.0.0.1:8008")
API_KEY = os.environ.get("API_KEY", "")
MAX_TOKENS = int(os.environ.get("MAX_TOKENS", "512"))
HEADERS = {"Authorization": f"Bearer {API_KEY}"} if API_KEY else {}  # no key needed while auth is off

# /stream: one `data: {"chunk": {...}, ...}` line per answer delta, then `data: [DONE]`.
body = {"text": "Write a haiku about the sea.", "max_tokens": MAX_TOKENS, "reasoning_level": "low"}
with httpx.stream("POST", f"{BASE_URL}/stream", json=body, headers=HEADERS, timeout=300) as response:
    response.raise_for_status()
    for line in response.iter_lines():
        if not line.startswith("data: "):
            continue
        if line == "data: [DONE]":
            print("\n[DONE]")
            break
        event = json.loads(line[len("data: ") :])
        print(event["chunk"]["delta"], end="", flush=True)
        if event["chunk"]["finish_reason"]:
            print(f"\nfinish_reason: {event['chunk']['finish_reason']}, tokens: {event['chunk']['tokens_generated']}")

# /v1/responses with stream=true: `event: <type>` then `data: {...}`; the stream ends with
# response.completed (or response.incomplete); there is no [DONE].
body = {"input": "Say hello.", "max_output_tokens": MAX_TOKENS, "stream": True}
with httpx.stream("POST", f"{BASE_URL}/v1/responses", json=body, headers=HEADERS, timeout=300) as response:
    response.raise_for_status()
    for line in response.iter_lines():
        if line.startswith("data: "):
            event = json.loads(line[len("data: ") :])
            if event["type"].endswith(".delta"):
                continue
            print(event["sequence_number"], event["type"])
