"""Stored responses over a live server with the gateway (SQLite in the data folder), through the openai SDK:
`store` keeps a response, `previous_response_id` continues it (the engine receives the first turn in its prompt,
with harmony's rule on reasoning), retrieve / input_items / delete read and remove it; another key's id is a 404
exactly like an unknown one; `store: false` keeps nothing; a stream is stored when it ends, or incomplete when the
client leaves; a response-cache hit is the response it replays; with auth off one anonymous owner holds them all;
stored responses outlive a restart."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from gateway_support import ANSWER, MASTER_KEY, GatewayServer, gateway_server

from tkr_embed.harmony.render import render_chat
from tkr_embed.harmony.tokenizer import get_tokenizer
from tkr_embed.harmony.types import ChatMessage, FunctionTool, ToolCall

CALL = (
    "<|channel|>analysis<|message|>Need the weather.<|end|><|start|>assistant<|channel|>commentary "
    'to=functions.get_weather <|constrain|>json<|message|>{"city": "Paris"}<|call|>'
)
WEATHER_TOOL = {
    "type": "function",
    "name": "get_weather",
    "description": "Current weather",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
}


def harmony(text: str) -> list[int]:
    return get_tokenizer().encoding.encode(text, allowed_special="all")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("stored-responses")


@pytest.fixture(scope="module")
def server(data_dir: Path) -> Iterator[GatewayServer]:
    with gateway_server(data_dir) as running:
        yield running


KEY_IDS: dict[str, str] = {}  # api key -> its id, the owner of what it stores


@pytest.fixture(scope="module")
def keys(server: GatewayServer) -> tuple[str, str]:
    created = [server.create_key("tenant-a"), server.create_key("tenant-b")]
    KEY_IDS.update({key["api_key"]: key["id"] for key in created})
    return created[0]["api_key"], created[1]["api_key"]


def sdk(server: GatewayServer, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0, timeout=30)


def stored_rows(data_dir: Path) -> list[tuple[str, str, str]]:
    """(id, owner, status) of every stored response, read from the database file itself."""
    with sqlite3.connect(data_dir / "tkr-embed.db") as connection:
        return connection.execute("SELECT id, owner, status FROM stored_responses ORDER BY created_at, id").fetchall()


def test_store_continue_retrieve_list_delete(server: GatewayServer, keys: tuple[str, str], data_dir: Path) -> None:
    client = sdk(server, keys[0])
    server.engine.script = lambda prompt, params: harmony(ANSWER)
    first = client.responses.create(input="What is 2+2?", instructions="Answer in French.")
    assert first.store is True and first.output_text == "Hello there"
    assert (first.id, KEY_IDS[keys[0]], "completed") in stored_rows(data_dir)

    second = client.responses.create(previous_response_id=first.id, input="And 3+3?")
    assert second.previous_response_id == first.id and second.status == "completed"
    # The engine got the first turn before the new input: its answer without its reasoning (the turn ended in a
    # final answer), and not the first request's instructions.
    expected = render_chat(
        [
            ChatMessage(role="user", content="What is 2+2?"),
            ChatMessage(role="assistant", content="Hello there"),
            ChatMessage(role="user", content="And 3+3?"),
        ],
        reasoning_effort=first.reasoning.effort,
    ).token_ids
    assert server.engine.submitted[-1].prompt_token_ids == expected
    assert second.usage.input_tokens == len(expected) > first.usage.input_tokens
    prompt_text = get_tokenizer().decode(expected)
    assert "think think" not in prompt_text and "French" not in prompt_text

    assert client.responses.retrieve(second.id).model_dump() == second.model_dump()
    listed = client.responses.input_items.list(second.id)
    assert [(item.type, item.role, item.content[0].text) for item in listed.data] == [("message", "user", "And 3+3?")]
    assert listed.first_id == listed.last_id == listed.data[0].id and listed.has_more is False

    assert client.responses.delete(second.id) is None  # the SDK reads no body; the raw answer is below
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(second.id)
    deleted = httpx.delete(f"{server.url}/v1/responses/{first.id}", headers={"X-API-Key": keys[0]}, timeout=30)
    assert deleted.status_code == 200 and deleted.json() == {"id": first.id, "object": "response", "deleted": True}
    assert all(row[0] not in (first.id, second.id) for row in stored_rows(data_dir))


def test_a_tool_call_chain_keeps_its_reasoning_until_the_final_answer(server: GatewayServer, keys) -> None:
    client = sdk(server, keys[0])
    server.engine.script = lambda prompt, params: harmony(CALL)
    asked = client.responses.create(input="Weather in Paris?", tools=[WEATHER_TOOL])
    call = asked.output[-1]
    assert call.type == "function_call" and call.name == "get_weather"

    server.engine.script = lambda prompt, params: harmony("<|channel|>final<|message|>Sunny.<|return|>")
    result = {"type": "function_call_output", "call_id": call.call_id, "output": "sunny, 21 C"}
    answered = client.responses.create(previous_response_id=asked.id, input=[result], tools=[WEATHER_TOOL])
    assert answered.output_text == "Sunny."
    tools = [FunctionTool("get_weather", "Current weather", WEATHER_TOOL["parameters"])]
    question = ChatMessage(role="user", content="Weather in Paris?")
    call_turn = ChatMessage(
        role="assistant",
        reasoning="Need the weather.",
        tool_calls=[ToolCall(id=call.call_id, name="get_weather", arguments='{"city": "Paris"}')],
    )
    tool_result = ChatMessage(role="tool", content="sunny, 21 C", tool_call_id=call.call_id, name="get_weather")
    effort = asked.reasoning.effort
    with_reasoning = render_chat([question, call_turn, tool_result], reasoning_effort=effort, tools=tools)
    assert server.engine.submitted[-1].prompt_token_ids == with_reasoning.token_ids
    assert "Need the weather." in get_tokenizer().decode(with_reasoning.token_ids)

    # Once the chain ended in a final answer, its reasoning is dropped from the next turn.
    server.engine.script = lambda prompt, params: harmony(ANSWER)
    client.responses.create(previous_response_id=answered.id, input="Thanks!")
    later = render_chat(
        [
            question,
            call_turn,
            tool_result,
            ChatMessage(role="assistant", content="Sunny."),
            ChatMessage(role="user", content="Thanks!"),
        ],
        reasoning_effort=effort,
    ).token_ids
    assert server.engine.submitted[-1].prompt_token_ids == later
    assert "Need the weather." not in get_tokenizer().decode(later)


def _error(response: httpx.Response) -> tuple[int, dict]:
    return response.status_code, response.json()["error"]


def test_another_keys_response_is_a_404_like_an_unknown_one(server: GatewayServer, keys, data_dir: Path) -> None:
    key_a, key_b = keys
    server.engine.script = lambda prompt, params: harmony(ANSWER)
    submitted = len(server.engine.submitted)
    owned = sdk(server, key_a).responses.create(input="mine")
    deleted_id = sdk(server, key_a).responses.create(input="gone").id
    sdk(server, key_a).responses.delete(deleted_id)

    def attempts(response_id: str, key: str) -> list[tuple[int, dict]]:
        headers = {"X-API-Key": key}
        base = f"{server.url}/v1/responses"
        return [
            _error(httpx.get(f"{base}/{response_id}", headers=headers)),
            _error(httpx.get(f"{base}/{response_id}/input_items", headers=headers)),
            _error(httpx.delete(f"{base}/{response_id}", headers=headers)),
        ]

    foreign = attempts(owned.id, key_b)
    for unknown_id, key in ((owned.id.replace("resp_", "resp_0"), key_b), (deleted_id, key_a)):
        unknown = attempts(unknown_id, key)
        assert [(s, {**e, "message": e["message"].replace(unknown_id, "ID")}) for s, e in unknown] == [
            (s, {**e, "message": e["message"].replace(owned.id, "ID")}) for s, e in foreign
        ]
    assert foreign[0] == (
        404,
        {
            "message": f"Response with id {owned.id!r} not found.",
            "type": "not_found_error",
            "param": None,
            "code": "response_not_found",
        },
    )
    with pytest.raises(openai.NotFoundError) as refused:
        sdk(server, key_b).responses.create(previous_response_id=owned.id, input="continue theirs")
    assert refused.value.body["param"] == "previous_response_id"
    assert len(server.engine.submitted) == submitted + 2  # only the owner's two requests reached the engine
    # B's delete removed nothing: A still reads it.
    assert sdk(server, key_a).responses.retrieve(owned.id).output_text == "Hello there"
    assert (owned.id, KEY_IDS[key_a], "completed") in stored_rows(data_dir)


def test_store_false_stores_nothing(server: GatewayServer, keys, data_dir: Path) -> None:
    server.engine.script = lambda prompt, params: harmony(ANSWER)
    before = stored_rows(data_dir)
    client = sdk(server, keys[0])
    answer = client.responses.create(input="forget me", store=False)
    streamed = client.responses.create(input="forget me too", store=False, stream=True)
    final = [event for event in streamed if event.type == "response.completed"][0].response
    assert answer.store is False and final.store is False
    assert stored_rows(data_dir) == before
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(answer.id)


def test_a_stream_is_stored_when_it_completes(server: GatewayServer, keys) -> None:
    server.engine.script = lambda prompt, params: harmony(ANSWER)
    client = sdk(server, keys[0])
    events = list(client.responses.create(input="stream it", stream=True))
    final = events[-1].response
    assert events[-1].type == "response.completed" and final.store is True
    assert client.responses.retrieve(final.id).model_dump() == final.model_dump()


def test_a_stream_the_client_left_is_stored_incomplete(server: GatewayServer, keys, data_dir: Path) -> None:
    server.engine.script = lambda prompt, params: harmony("<|channel|>final<|message|>one two three four five six")
    server.engine.hang_after = 4
    try:
        headers = {"X-API-Key": keys[0]}
        body = {"input": "leave early", "stream": True}
        with httpx.stream("POST", server.url + "/v1/responses", json=body, headers=headers, timeout=30) as response:
            lines = response.iter_lines()
            assert next(lines) == "event: response.created"
            response_id = httpx.Response(200, content=next(lines).removeprefix("data: ")).json()["response"]["id"]
            for line in lines:
                if line.startswith("event: response.output_text.delta"):
                    break
        deadline = time.monotonic() + 20
        while response_id not in [row[0] for row in stored_rows(data_dir)] and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        server.engine.hang_after = None
    stored = sdk(server, keys[0]).responses.retrieve(response_id)
    assert stored.status == "incomplete" and stored.incomplete_details.reason == "interrupted"
    assert stored.output[-1].status == "incomplete" and stored.output[-1].content[0].text.startswith("one")


def test_input_items_pages_as_openai_lists_them(server: GatewayServer, keys) -> None:
    server.engine.script = lambda prompt, params: harmony(ANSWER)
    client = sdk(server, keys[0])
    words = ["one", "two", "three", "four", "five"]
    response = client.responses.create(input=[{"role": "user", "content": word} for word in words])
    texts = [item.content[0].text for item in client.responses.input_items.list(response.id, limit=2)]
    assert texts == words[::-1]  # the SDK follows has_more and last_id; newest first by default
    page = client.responses.input_items.list(response.id, limit=2, order="asc")
    assert [item.content[0].text for item in page.data] == ["one", "two"] and page.has_more is True
    after = client.responses.input_items.list(response.id, limit=10, order="asc", after=page.last_id)
    assert [item.content[0].text for item in after.data] == ["three", "four", "five"] and after.has_more is False
    headers = {"X-API-Key": keys[0]}
    url = f"{server.url}/v1/responses/{response.id}/input_items"
    before = httpx.get(url, params={"order": "asc", "before": after.last_id, "limit": 2}, headers=headers).json()
    assert [item["content"][0]["text"] for item in before["data"]] == ["three", "four"] and before["has_more"] is True
    for params, param in [({"limit": 0}, "limit"), ({"order": "sideways"}, "order"), ({"after": "msg_x"}, "after")]:
        refused = httpx.get(url, params=params, headers=headers)
        assert refused.status_code == 400 and refused.json()["error"]["param"] == param, refused.text


def test_a_key_without_generate_chat_may_not_read_stored_responses(server: GatewayServer, keys) -> None:
    server.engine.script = lambda prompt, params: harmony(ANSWER)
    owned = sdk(server, keys[0]).responses.create(input="scoped")
    text_only = server.create_key("text-only", ["generate:text"])["api_key"]
    refused = httpx.get(f"{server.url}/v1/responses/{owned.id}", headers={"X-API-Key": text_only})
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "insufficient_permissions"


def test_stored_responses_outlive_a_restart(tmp_path: Path) -> None:
    with gateway_server(tmp_path) as first_run:
        key = first_run.create_key("tenant")["api_key"]
        first_run.engine.script = lambda prompt, params: harmony(ANSWER)
        first = sdk(first_run, key).responses.create(input="remember this")
    with gateway_server(tmp_path) as second_run:
        second_run.engine.script = lambda prompt, params: harmony(ANSWER)
        client = sdk(second_run, key)
        assert client.responses.retrieve(first.id).model_dump() == first.model_dump()
        assert [item.content[0].text for item in client.responses.input_items.list(first.id)] == ["remember this"]
        second = client.responses.create(previous_response_id=first.id, input="and now?")
        assert "remember this" in get_tokenizer().decode(second_run.engine.submitted[-1].prompt_token_ids)
        assert second.usage.input_tokens > first.usage.input_tokens
        client.responses.delete(first.id)
        with pytest.raises(openai.NotFoundError):
            client.responses.retrieve(first.id)
        master = openai.OpenAI(base_url=second_run.url + "/v1", api_key=MASTER_KEY, max_retries=0)
        with pytest.raises(openai.NotFoundError):  # the master key is a caller of its own, not every tenant
            master.responses.retrieve(second.id)


def test_a_response_cache_hit_is_the_stored_response_it_replays(tmp_path: Path) -> None:
    with gateway_server(tmp_path, cache={"enabled": True}) as running:
        running.engine.script = lambda prompt, params: harmony(ANSWER)
        key = running.create_key("cached")["api_key"]
        body = {"input": "cache me", "temperature": 0}
        headers = {"X-API-Key": key}
        first, second = (httpx.post(running.url + "/v1/responses", json=body, headers=headers) for _ in range(2))
        assert (first.headers["x-cache"], second.headers["x-cache"]) == ("miss", "hit")
        assert second.json() == first.json() and len(running.engine.submitted) == 1
        streamed = [sdk(running, key).responses.create(**body, stream=True) for _ in range(2)]
        finals = [list(events)[-1].response for events in streamed]
        assert finals[0].id == finals[1].id != first.json()["id"]
        assert sorted(row[0] for row in stored_rows(tmp_path)) == sorted([first.json()["id"], finals[0].id])
        assert sdk(running, key).responses.retrieve(finals[1].id).model_dump() == finals[0].model_dump()


def test_with_auth_off_responses_belong_to_one_anonymous_owner(tmp_path: Path) -> None:
    with gateway_server(tmp_path, env="development", security={"auth_enabled": False}) as running:
        running.engine.script = lambda prompt, params: harmony(ANSWER)
        client = sdk(running, "unused")
        first = client.responses.create(input="no keys here")
        second = client.responses.create(previous_response_id=first.id, input="still none")
        assert client.responses.retrieve(second.id).previous_response_id == first.id
        assert sorted(stored_rows(tmp_path)) == sorted(
            [(first.id, "anonymous", "completed"), (second.id, "anonymous", "completed")]
        )
