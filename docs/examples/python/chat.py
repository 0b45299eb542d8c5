"""Chat through the OpenAI SDK: the answer and the model's reasoning come back separately.

BASE_URL=http://127.0.0.1:8008 API_KEY=... python docs/examples/python/chat.py
"""

import os

from openai import OpenAI

BASE_URL = os.environ.get("BASE_URL", "http://127.0.0.1:8008")
API_KEY = os.environ.get("API_KEY") or "none"  # any value works while auth is off (development)
MAX_TOKENS = int(os.environ.get("MAX_TOKENS", "512"))

client = OpenAI(base_url=f"{BASE_URL}/v1", api_key=API_KEY)
model = client.models.list().data[0].id

response = client.chat.completions.create(
    model=model,
    messages=[
        {"role": "system", "content": "You are a concise assistant."},
        {"role": "user", "content": "Name three primary colours."},
    ],
    reasoning_effort="low",  # low | medium | high: harmony's reasoning effort
    max_tokens=MAX_TOKENS,
    temperature=0.7,
)
message = response.choices[0].message
# The analysis channel is never mixed into `content`; it comes back as `reasoning` (and `reasoning_content`).
print("reasoning:", (message.model_extra or {}).get("reasoning"))
print("answer:", message.content)
print("finish_reason:", response.choices[0].finish_reason)
print(
    "usage:",
    response.usage.prompt_tokens,
    "prompt +",
    response.usage.completion_tokens,
    "completion tokens,",
    response.usage.completion_tokens_details.reasoning_tokens,
    "of them reasoning",
)
