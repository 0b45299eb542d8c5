"""Stream the Responses API through the OpenAI SDK: typed events, reasoning deltas, the final response.

BASE_URL=http://127.0.0.1:8008 API_KEY=... python docs/examples/streaming/responses_stream.py
"""

import os

from openai import OpenAI

BASE_URL = os.environ.get("BASE_URL", "http://127.0.0.1:8008")
API_KEY = os.environ.get("API_KEY") or "none"
MAX_TOKENS = int(os.environ.get("MAX_TOKENS", "512"))

client = OpenAI(base_url=f"{BASE_URL}/v1", api_key=API_KEY)
model = client.models.list().data[0].id

kinds, reasoning, final = [], [], None
with client.responses.stream(
    model=model, input="Write a haiku about the sea.", max_output_tokens=MAX_TOKENS, reasoning={"effort": "low"}
) as stream:
    for event in stream:
        kinds.append(event.type)
        if event.type == "response.reasoning_text.delta":
            reasoning.append(event.delta)  # the chain of thought: never part of the answer
        elif event.type == "response.output_text.delta":
            print(event.delta, end="", flush=True)
        elif event.type in ("response.completed", "response.incomplete"):
            final = event.response
print()
if final is None:
    raise SystemExit("the stream ended without a final response")
print("events:", " ".join(dict.fromkeys(kinds)))  # each kind once, in order of first appearance
print("status:", final.status, "| output items:", [item.type for item in final.output])
print("reasoning:", repr("".join(reasoning)))
print("answer:", repr(final.output_text))
