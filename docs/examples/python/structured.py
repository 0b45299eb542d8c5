"""Structured output through the OpenAI SDK: the answer is JSON that follows a schema, the reasoning stays free.

BASE_URL=http://127.0.0.1:8008 API_KEY=... python docs/examples/python/structured.py
"""

import json
import os

from openai import OpenAI

BASE_URL = os.environ.get("BASE_URL", "http://127.0.0.1:8008")
API_KEY = os.environ.get("API_KEY") or "none"
# The reasoning may use half of max_tokens; the JSON gets the rest.
MAX_TOKENS = max(int(os.environ.get("MAX_TOKENS", "1024")), 64)

SCHEMA = {
    "type": "object",
    "properties": {
        "colours": {"type": "array", "items": {"enum": ["red", "yellow", "blue", "green"]}, "maxItems": 3},
        "confident": {"type": "boolean"},
    },
    "required": ["colours", "confident"],
    "additionalProperties": False,
}

client = OpenAI(base_url=f"{BASE_URL}/v1", api_key=API_KEY)
model = client.models.list().data[0].id
reply = client.chat.completions.create(
    model=model,
    messages=[{"role": "user", "content": "Name the three primary colours."}],
    response_format={"type": "json_schema", "json_schema": {"name": "colours", "schema": SCHEMA, "strict": True}},
    reasoning_effort="low",
    max_tokens=MAX_TOKENS,
)
choice = reply.choices[0]
print("finish_reason:", choice.finish_reason)  # "length": the JSON was cut, a prefix of a valid answer
if choice.finish_reason == "stop":
    print("answer:", json.loads(choice.message.content))
