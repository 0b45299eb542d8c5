"""Stream a chat completion through the OpenAI SDK: reasoning and answer deltas apart, usage at the end.

BASE_URL=http://127.0.0.1:8008 API_KEY=... python docs/examples/streaming/openai_stream.py
"""

import os

from openai import OpenAI

BASE_URL = os.environ.get("BASE_URL", "http://127.0.0.1:8008")
API_KEY = os.environ.get("API_KEY") or "none"
MAX_TOKENS = int(os.environ.get("MAX_TOKENS", "512"))

client = OpenAI(base_url=f"{BASE_URL}/v1", api_key=API_KEY)
model = client.models.list().data[0].id

stream = client.chat.completions.create(
    model=model,
    messages=[{"role": "user", "content": "Write a haiku about the sea."}],
    max_tokens=MAX_TOKENS,
    stream=True,
    stream_options={"include_usage": True},  # one last chunk with `choices: []` and the usage
)
reasoning, answer = [], []
for chunk in stream:
    if chunk.usage is not None:
        print(f"\nusage: {chunk.usage.prompt_tokens} prompt + {chunk.usage.completion_tokens} completion tokens")
        continue
    delta = chunk.choices[0].delta
    reasoning.append((delta.model_extra or {}).get("reasoning") or "")
    if delta.content:
        answer.append(delta.content)
        print(delta.content, end="", flush=True)
    if chunk.choices[0].finish_reason:
        print(f"\nfinish_reason: {chunk.choices[0].finish_reason}")
print(f"reasoning: {''.join(reasoning)!r}")
print(f"answer: {''.join(answer)!r}")
