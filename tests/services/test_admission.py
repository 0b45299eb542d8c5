"""Admission in the services: each limit a 400 naming the field and the limit, the work bound on the default
max_tokens, the cost charged to the caller's limits, and the bounded prompt pool (503 + Retry-After when full)."""

from __future__ import annotations

import asyncio
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "api"))

from fake_engine import FakeEngine  # noqa: E402

from tkr_embed.engine.errors import EngineOverloadedError  # noqa: E402
from tkr_embed.harmony.tokenizer import get_tokenizer  # noqa: E402
from tkr_embed.protocol.limits import RequestLimits, request_limits, set_request_limits  # noqa: E402
from tkr_embed.protocol.openai_chat import ChatCompletionRequest  # noqa: E402
from tkr_embed.protocol.openai_completions import CompletionRequest  # noqa: E402
from tkr_embed.protocol.openai_responses import ResponsesRequest  # noqa: E402
from tkr_embed.services.accounting import RequestAccount, RequestCost, account_scope  # noqa: E402
from tkr_embed.services.chat_completions import ChatCompletionService  # noqa: E402
from tkr_embed.services.completions import CompletionService  # noqa: E402
from tkr_embed.services.context import ModelContext  # noqa: E402
from tkr_embed.services.errors import BadRequestError, RateLimitedError  # noqa: E402
from tkr_embed.services.prompt_pool import PromptPool  # noqa: E402

CONTEXT = 131_072


@pytest.fixture
def limits() -> Iterator[None]:
    previous = request_limits()
    yield
    set_request_limits(previous)


def context(engine: FakeEngine | None = None) -> ModelContext:
    tok = get_tokenizer()
    return ModelContext(engine=engine, tokenizer=tok, model_id="m", context_length=CONTEXT)  # type: ignore[arg-type]


def test_counts_are_refused_while_the_body_is_validated(limits: None) -> None:
    set_request_limits(RequestLimits(max_input_items=3, max_prompts=2))
    with pytest.raises(Exception) as raised:
        ResponsesRequest.model_validate({"input": [{"role": "user", "content": "x"}] * 4})
    assert "at most 3 input items" in str(raised.value) and "server.max_input_items" in str(raised.value)
    with pytest.raises(Exception, match="at most 3 messages"):
        ChatCompletionRequest.model_validate({"messages": [{"role": "user", "content": "x"}] * 4})
    with pytest.raises(Exception, match="at most 2 prompts"):
        CompletionRequest.model_validate({"prompt": ["a", "b", "c"]})
    CompletionRequest.model_validate({"prompt": [1, 2, 3, 4]})  # a flat list of ids is one prompt


def test_sequences_prompt_chars_and_tokens_are_400s_naming_the_field(limits: None) -> None:
    service = CompletionService(context())
    with pytest.raises(BadRequestError) as raised:
        service.prepare(CompletionRequest.model_validate({"prompt": ["a"] * 64, "n": 3}))
    assert raised.value.param == "n" and "192 sequences" in raised.value.message and "128" in raised.value.message
    set_request_limits(RequestLimits(max_prompt_chars=100, max_prompt_tokens=5))
    with pytest.raises(BadRequestError) as raised:
        service.prepare(CompletionRequest.model_validate({"prompt": "x" * 101}))
    assert raised.value.param == "prompt" and "max_prompt_chars" in raised.value.message
    with pytest.raises(BadRequestError) as raised:
        service.prepare(CompletionRequest.model_validate({"prompt": "one two three four five six seven"}))
    assert raised.value.param == "prompt" and "max_prompt_tokens" in raised.value.message
    chat = ChatCompletionService(context())
    with pytest.raises(BadRequestError) as raised:
        chat.prepare(ChatCompletionRequest.model_validate({"messages": [{"role": "user", "content": "y" * 101}]}))
    assert raised.value.param == "messages" and "max_prompt_chars" in raised.value.message


def test_the_default_max_tokens_of_many_sequences_shares_the_work_bound(limits: None) -> None:
    service = CompletionService(context())
    one = service.prepare(CompletionRequest.model_validate({"prompt": "hi", "max_tokens": None}))
    assert one[0].params.max_tokens == CONTEXT - len(one[0].prompt_token_ids)  # one sequence: the whole room
    many = service.prepare(CompletionRequest.model_validate({"prompt": ["hi"] * 64, "n": 2, "max_tokens": None}))
    prompt_work = sum(len(p.prompt_token_ids) * 2 for p in many)
    share = (request_limits().max_request_tokens - prompt_work) // 128
    assert {p.params.max_tokens for p in many} == {share}
    assert share < CONTEXT // 16
    with pytest.raises(BadRequestError) as raised:
        service.prepare(CompletionRequest.model_validate({"prompt": ["hi"] * 64, "n": 2, "max_tokens": 9_000}))
    assert raised.value.param == "max_tokens" and "max_request_tokens" in raised.value.message


async def test_the_cost_is_charged_before_the_engine_and_a_refusal_starts_nothing() -> None:
    tok = get_tokenizer()
    engine = FakeEngine(decode=tok.decode)
    service = CompletionService(context(engine))
    charged: list[RequestCost] = []

    async def charge(cost: RequestCost) -> None:
        charged.append(cost)

    body = CompletionRequest.model_validate({"prompt": ["hi", "there"], "n": 2, "max_tokens": 3})
    with account_scope(RequestAccount(scope="k", charge=charge)):
        await service.create(body)
    prompt_tokens = 2 * (len(tok.encode("hi")) + len(tok.encode("there")))
    assert charged == [RequestCost(sequences=4, prompt_tokens=prompt_tokens, max_new_tokens=12)]

    async def refuse(cost: RequestCost) -> None:
        raise RateLimitedError("rate limit exceeded (requests_per_minute)", {"retry-after": "7"})

    submitted = len(engine.submitted)
    with account_scope(RequestAccount(scope="k", charge=refuse)), pytest.raises(RateLimitedError) as raised:
        await service.create(body)
    assert raised.value.status == 429 and raised.value.headers == {"retry-after": "7"}
    assert len(engine.submitted) == submitted


async def test_a_full_prompt_pool_answers_503_with_retry_after() -> None:
    pool = PromptPool(workers=1, queue=1)
    release = threading.Event()
    try:
        running = [asyncio.ensure_future(pool.run(release.wait, 10)) for _ in range(2)]
        await asyncio.sleep(0.05)
        with pytest.raises(EngineOverloadedError) as raised:
            await pool.run(lambda: None)
        assert raised.value.retry_after_s >= 1
        release.set()
        assert await asyncio.gather(*running) == [True, True]
        assert pool.jobs == 0 and await pool.run(lambda: 42) == 42
    finally:
        release.set()
        pool.close()
