"""Held-out demo prompts as the server renders them (the chat service's own conversion), for engine-level tests."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from tkr_embed.models.gpt_oss.demo_corpus import DialogueMaker
from tkr_embed.protocol.openai_chat import ChatCompletionRequest
from tkr_embed.services.chat_prompt import render_request

if TYPE_CHECKING:  # the GPU machine, which runs the GPU test through this module, has no openai package
    from openai.types.chat import ChatCompletion

HELD_OUT_SEED = 1  # any seed of the test split is held out; the training script reports on seed 0
CONCURRENCY = 32  # requests at a time, as many as the test server batches
MAX_TOKENS = 400

Ask = Callable[..., "ChatCompletion"]  # ask(dialogue, **overrides): the dialogue's request, greedy, through the SDK
T = TypeVar("T")
R = TypeVar("R")


def in_parallel(work: Callable[[T], R], items: list[T]) -> list[R]:
    """`work` on every item, as many at a time as the server batches (results in the items' order)."""
    with ThreadPoolExecutor(CONCURRENCY) as pool:
        return list(pool.map(work, items))


@dataclass
class DemoPrompt:
    token_ids: list[int]
    stop_token_ids: list[int]
    expected: str  # text a right answer holds: the sum's digits, or the city


def demo_prompts(seed: int) -> list[DemoPrompt]:
    """Two arithmetic questions (low and high effort), one asked as JSON, and weather calls of each tool choice."""
    maker = DialogueMaker("test", seed)
    dialogues = [
        maker.arithmetic(effort="low", with_tools=False),
        maker.arithmetic(effort="high", with_tools=False),
        maker.arithmetic(as_json=True, with_tools=True),
        maker.weather_call("auto"),
        maker.weather_call("required"),
        maker.weather_call("named"),
    ]
    prompts = []
    for dialogue in dialogues:
        rendered = render_request(ChatCompletionRequest(model="demo", **dialogue.request))
        expected = str(dialogue.expected.get("answer", dialogue.expected.get("city")))
        prompts.append(DemoPrompt(rendered.token_ids, list(rendered.stop_token_ids), expected))
    return prompts
