"""The Responses API through the OpenAI SDK: reasoning and message items, a function call round trip where the
earlier output items are sent back as input, then a stored response continued by its id.

    BASE_URL=http://127.0.0.1:8008 API_KEY=... python docs/examples/python/responses.py
"""

import json
import os

from openai import OpenAI

BASE_URL = os.environ.get("BASE_URL", "http://127.0.0.1:8008")
API_KEY = os.environ.get("API_KEY") or "none"
MAX_TOKENS = int(os.environ.get("MAX_TOKENS", "512"))

client = OpenAI(base_url=f"{BASE_URL}/v1", api_key=API_KEY)
model = client.models.list().data[0].id

response = client.responses.create(
    model=model,
    instructions="You are a concise assistant.",
    input="Name three primary colours.",
    reasoning={"effort": "low"},
    max_output_tokens=MAX_TOKENS,
)
print("status:", response.status)  # completed, or incomplete (max_output_tokens reached)
for item in response.output:
    if item.type == "reasoning":
        print("reasoning:", "".join(part.text for part in item.content or []))
print("answer:", response.output_text)
print(
    "usage:",
    response.usage.input_tokens,
    "in,",
    response.usage.output_tokens,
    "out,",
    response.usage.output_tokens_details.reasoning_tokens,
    "reasoning",
)

# Function tools use the Responses API's flat shape. One way to continue: send the earlier output items
# (reasoning and function_call) back, followed by a function_call_output per call.
tools = [
    {
        "type": "function",
        "name": "get_weather",
        "description": "Current weather of a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    }
]
history = [{"role": "user", "content": "What is the weather in Paris?"}]
first = client.responses.create(
    model=model,
    input=history,
    tools=tools,
    max_output_tokens=MAX_TOKENS,
    tool_choice={"type": "function", "name": "get_weather"},
)
calls = [item for item in first.output if item.type == "function_call"]
history += [item.model_dump(exclude_none=True) for item in first.output]
for call in calls:
    print("function_call:", call.name, call.arguments)
    result = {"city": "Paris", "temperature_c": 21, "sky": "clear"}
    history.append({"type": "function_call_output", "call_id": call.call_id, "output": json.dumps(result)})
second = client.responses.create(model=model, input=history, tools=tools, max_output_tokens=MAX_TOKENS)
print("answer after the tool:", second.output_text)

# The other way: the server stored each response (store defaults to true), so the next turn names the one it
# continues and sends only what is new. The prompt holds the whole conversation (see usage.input_tokens).
followup = client.responses.create(
    model=model, previous_response_id=second.id, input="And in Rome?", tools=tools, max_output_tokens=MAX_TOKENS
)
print("continued:", followup.output_text, f"({followup.usage.input_tokens} input tokens)")
print("its own input items:", [item.type for item in client.responses.input_items.list(followup.id)])
print("stored:", client.responses.retrieve(followup.id).status)
client.responses.delete(followup.id)
