"""Every file under docs/examples runs against a live server on the demo checkpoint, so none can rot.

The server runs with the extensions `tkr-embed serve` installs and auth switched on: once the gateway is
wired in, an example that forgot to send API_KEY fails here.
"""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parents[1] / "api"))

from live_server import live_server  # noqa: E402

from tkr_embed.api.extensions import default_extensions  # noqa: E402
from tkr_embed.api.server import create_app  # noqa: E402
from tkr_embed.config import Settings  # noqa: E402

EXAMPLES = Path(__file__).parents[2] / "docs" / "examples"
API_KEY = "docs-examples-master-key-0123456789"
MAX_TOKENS = 4  # the demo model's answers are noise: a few tokens prove the plumbing


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    torch.set_num_threads(2)
    settings = Settings(
        model={"device": "cpu"},  # no model path: the demo checkpoint is written and served
        engine={"max_num_seqs": 2, "max_waiting": 8, "kv_cache_blocks": 256},
        security={"auth_enabled": True, "api_key": API_KEY},
        storage={"data_dir": str(tmp_path_factory.mktemp("docs-data"))},
    )
    with live_server(create_app(settings, extensions=default_extensions(settings))) as url:
        yield url


def run(server: str, relative: str) -> str:
    path = EXAMPLES / relative
    command = ["bash", str(path)] if path.suffix == ".sh" else [sys.executable, str(path)]
    env = {**os.environ, "BASE_URL": server, "API_KEY": API_KEY, "MAX_TOKENS": str(MAX_TOKENS)}
    completed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)
    assert completed.returncode == 0, f"{relative} failed:\n{completed.stdout}\n{completed.stderr}"
    return completed.stdout


def lines_starting(output: str, prefix: str) -> list[str]:
    return [line[len(prefix) :].strip() for line in output.splitlines() if line.startswith(prefix)]


def json_lines(output: str) -> list[dict]:
    return [json.loads(line) for line in output.splitlines() if line.startswith("{")]


def sse_data(output: str) -> list[str]:
    return [line[len("data: ") :] for line in output.splitlines() if line.startswith("data: ")]


EXECUTED = (
    "python/chat.py",
    "python/tools.py",
    "python/responses.py",
    "python/native_chat.py",
    "python/structured.py",
    "streaming/openai_stream.py",
    "streaming/responses_stream.py",
    "streaming/raw_sse.py",
    "curl/health.sh",
    "curl/generate.sh",
    "curl/chat.sh",
    "curl/stream.sh",
    "curl/models.sh",
    "curl/chat_completions.sh",
    "curl/completions.sh",
    "curl/responses.sh",
)


def example(relative: str) -> str:
    assert relative in EXECUTED, f"add {relative} to EXECUTED"
    return relative


def test_python_chat(server):
    out = run(server, example("python/chat.py"))
    assert lines_starting(out, "finish_reason:")[0] in ("length", "stop")
    prompt, completion = map(int, re.search(r"usage: (\d+) prompt \+ (\d+) completion", out).groups())
    assert prompt > 10 and 1 <= completion <= MAX_TOKENS
    assert len(lines_starting(out, "answer:")) == 1 and len(lines_starting(out, "reasoning:")) == 1


def test_python_tools_round_trip(server):
    out = run(server, example("python/tools.py"))
    # The named tool_choice forces the call even from random weights.
    assert lines_starting(out, "tool call:")[0].startswith("get_weather")
    assert "'temperature_c': 21" in out
    assert len(lines_starting(out, "answer:")) == 1


def test_python_responses(server):
    out = run(server, example("python/responses.py"))
    assert lines_starting(out, "status:")[0] in ("completed", "incomplete")
    assert lines_starting(out, "function_call:")[0].startswith("get_weather")
    assert len(lines_starting(out, "answer after the tool:")) == 1
    assert re.search(r"usage: \d+ in, [1-4] out, \d+ reasoning", out)
    assert len(lines_starting(out, "continued:")) == 1
    assert lines_starting(out, "its own input items:") == ["['message']"]
    assert lines_starting(out, "stored:")[0] in ("completed", "incomplete")


def test_python_structured_output(server):
    out = run(server, example("python/structured.py"))
    # Random weights reason at random; the budget leaves the JSON room, and it always parses.
    assert lines_starting(out, "finish_reason:") == ["stop"]
    answer = ast.literal_eval(lines_starting(out, "answer:")[0])
    assert set(answer) == {"colours", "confident"} and set(answer["colours"]) <= {"red", "yellow", "blue", "green"}


def test_python_native_chat(server):
    out = run(server, example("python/native_chat.py"))
    assert re.fullmatch(r"[A-Za-z0-9._:\-]+", lines_starting(out, "request id:")[0])
    assert re.match(r"(length|stop) tokens: [1-4] usage: \{", lines_starting(out, "finish_reason:")[0])


def test_streaming_openai(server):
    out = run(server, example("streaming/openai_stream.py"))
    assert re.search(r"usage: \d+ prompt \+ [1-4] completion tokens", out)
    assert lines_starting(out, "finish_reason:")[0] in ("length", "stop")


def test_streaming_responses(server):
    out = run(server, example("streaming/responses_stream.py"))
    events = lines_starting(out, "events:")[0].split()
    assert events[:3] == ["response.created", "response.in_progress", "response.output_item.added"]
    assert events[-1] in ("response.completed", "response.incomplete")
    assert lines_starting(out, "status:")[0].split(" | ")[0] in ("completed", "incomplete")


def test_streaming_raw_sse(server):
    out = run(server, example("streaming/raw_sse.py"))
    assert "[DONE]" in out.splitlines()
    numbered = [line.split(" ", 1) for line in out.splitlines() if re.fullmatch(r"\d+ response\.\S+", line)]
    assert numbered[0] == ["0", "response.created"]
    assert numbered[-1][1] in ("response.completed", "response.incomplete")
    assert [int(n) for n, _ in numbered] == sorted(int(n) for n, _ in numbered)


def test_curl_health_and_info(server):
    health, info = json_lines(run(server, example("curl/health.sh")))
    assert health["status"] == "healthy" and health["model_loaded"] is True
    assert info["demo_model"] is True and info["context_length"] > 0


def test_curl_generate_and_chat(server):
    for script in ("curl/generate.sh", "curl/chat.sh"):
        (body,) = json_lines(run(server, example(script)))
        assert set(body) >= {"text", "reasoning", "finish_reason", "tokens_generated", "usage"}
        assert 1 <= body["tokens_generated"] <= MAX_TOKENS


def test_curl_stream(server):
    data = sse_data(run(server, example("curl/stream.sh")))
    assert data[-1] == "[DONE]"
    chunks = [json.loads(item)["chunk"] for item in data[:-1]]
    assert chunks and chunks[-1]["finish_reason"] in ("length", "stop")


def test_curl_openai_endpoints(server):
    (models,) = json_lines(run(server, example("curl/models.sh")))
    assert models["object"] == "list" and len(models["data"]) == 1
    (chat,) = json_lines(run(server, example("curl/chat_completions.sh")))
    assert chat["object"] == "chat.completion" and chat["model"] == models["data"][0]["id"]
    (completion,) = json_lines(run(server, example("curl/completions.sh")))
    assert completion["object"] == "text_completion" and completion["usage"]["completion_tokens"] == MAX_TOKENS


def test_curl_responses(server):
    out = run(server, example("curl/responses.sh"))
    response = json_lines(out)[0]
    assert response["object"] == "response" and response["status"] in ("completed", "incomplete")
    kinds = lines_starting(out, "event:")
    assert kinds[0] == "response.created" and kinds[-1] in ("response.completed", "response.incomplete")
    assert len(sse_data(out)) == len(kinds)


def test_every_example_is_executed():
    present = {str(p.relative_to(EXAMPLES)) for p in EXAMPLES.rglob("*") if p.suffix in (".py", ".sh")}
    assert present == set(EXECUTED)


def test_examples_fail_without_the_key_when_auth_is_on(server):
    if httpx.get(server + "/v1/models").status_code != 401:
        pytest.skip("no auth extension is installed by default_extensions() yet")
    env = {**os.environ, "BASE_URL": server, "API_KEY": "", "MAX_TOKENS": "1"}
    completed = subprocess.run(["bash", str(EXAMPLES / "curl/models.sh")], env=env, capture_output=True, text=True)
    assert completed.returncode != 0 and '"authentication_error"' in completed.stdout


README = Path(__file__).parents[2] / "README.md"


def readme_curl_commands() -> list[str]:
    """Every `curl` command of the README's shell blocks, continuation lines joined."""
    blocks = re.findall(r"```sh\n(.*?)```", README.read_text(), flags=re.S)
    commands = []
    for block in blocks:
        for command in block.replace("\\\n", " ").splitlines():
            if command.startswith("curl "):
                commands.append(command.split("  #", 1)[0].strip())
    return commands


def test_readme_curl_examples_work(server):
    """Each README curl runs as written (max_tokens lowered: the demo's answers are noise) and gets a 2xx."""
    commands = readme_curl_commands()
    assert len(commands) >= 14
    env = {**os.environ, "BASE_URL": server, "API_KEY": API_KEY, "ADMIN_KEY": API_KEY}
    key_id = None
    for command in sorted(commands, key=lambda c: "KEY_ID" in c):  # revoke the key made by the create
        command = re.sub(r'"(max_tokens|max_output_tokens)": \d+', rf'"\1": {MAX_TOKENS}', command)
        if "KEY_ID" in command:
            assert key_id, "the README creates a key before revoking one"
            command = command.replace("KEY_ID", key_id)
        completed = subprocess.run(
            ["bash", "-c", command.replace("curl ", "curl -sS --fail-with-body ", 1)],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert completed.returncode == 0, f"{command}\n{completed.stdout}\n{completed.stderr}"
        if "/admin/api-keys" in command and "-X POST" in command:
            key_id = json.loads(completed.stdout)["id"]
