"""Function calling through the OpenAI SDK chat API: the model calls a tool, we run it and send the result back.

BASE_URL=http://127.0.0.1:8008 API_KEY=... python docs/examples/python/tools.py
"""

import json
import os

from openai import OpenAI

BASE_URL = os.environ.get("BASE_URL", "http://127.0.0.1:8008")
API_KEY = os.environ.get("API_KEY") or "none"
MAX_TOKENS = int(os.environ.get("MAX_TOKENS", "512"))

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather of a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        },
    }
]


def get_weather(city: str = "Paris") -> dict:
    return {"city": city, "temperature_c": 21, "sky": "clear"}


client = OpenAI(base_url=f"{BASE_URL}/v1", api_key=API_KEY)
model = client.models.list().data[0].id
messages = [{"role": "user", "content": "What is the weather in Paris?"}]

# tool_choice may be "auto" (the model decides), "none", "required" or a named function (forced, as here).
first = client.chat.completions.create(
    model=model,
    messages=messages,
    tools=TOOLS,
    max_tokens=MAX_TOKENS,
    tool_choice={"type": "function", "function": {"name": "get_weather"}},
)
reply = first.choices[0].message
print("finish_reason:", first.choices[0].finish_reason)
if not reply.tool_calls:
    print("answer:", reply.content)
    raise SystemExit(0)

# Send the assistant turn back as it came (reasoning included), then one tool message per call.
messages.append(
    {
        "role": "assistant",
        "content": reply.content,
        "reasoning": (reply.model_extra or {}).get("reasoning"),
        "tool_calls": [call.model_dump() for call in reply.tool_calls],
    }
)
for call in reply.tool_calls:
    try:
        arguments = json.loads(call.function.arguments)
    except ValueError:  # truncated (max_tokens) or malformed arguments: fall back to a default
        arguments = None
    result = get_weather(arguments.get("city", "Paris") if isinstance(arguments, dict) else "Paris")
    print("tool call:", call.function.name, call.function.arguments, "->", result)
    messages.append({"role": "tool", "tool_call_id": call.id, "content": json.dumps(result)})

second = client.chat.completions.create(model=model, messages=messages, tools=TOOLS, max_tokens=MAX_TOKENS)
print("answer:", second.choices[0].message.content)
