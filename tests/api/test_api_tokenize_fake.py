"""/tokenize, /detokenize and /tokenizer_info: vLLM's shapes, the ids the generation endpoints would use, 400s."""

from __future__ import annotations

import httpx
import pytest

from tkr_embed.protocol.limits import RequestLimits, request_limits, set_request_limits

HELLO = [{"role": "user", "content": "What is 2 + 2?"}]


def post(base_url: str, path: str, body) -> httpx.Response:
    return httpx.post(base_url + path, json=body, timeout=30)


def test_tokenize_a_prompt_as_completions_does(base_url, fake, tokenizer):
    response = post(base_url, "/tokenize", {"prompt": "Hello world<|end|>"})
    assert response.status_code == 200, response.text
    ids = tokenizer.encode("Hello world<|end|>")
    # Special-token text stays text, as in a /v1/completions prompt.
    assert 200007 not in ids
    assert response.json() == {"count": len(ids), "max_model_len": 4096, "tokens": ids, "token_strs": None}
    post(base_url, "/v1/completions", {"prompt": "Hello world<|end|>", "max_tokens": 1})
    assert fake.submitted[0].prompt_token_ids == ids


def test_token_strs_spell_tokens_as_the_vocabulary_does(base_url, fake, tokenizer):
    body = post(base_url, "/tokenize", {"prompt": "Hello world", "return_token_strs": True}).json()
    assert body["token_strs"] == ["Hello", "Ġworld"]
    # A character cut across tokens is still spelled byte for byte (each byte as one character).
    emoji = post(base_url, "/tokenize", {"prompt": "🦊", "return_token_strs": True}).json()
    assert emoji["count"] == len(emoji["token_strs"]) == 3
    spelled = "".join(emoji["token_strs"])
    assert len(spelled) == len("🦊".encode()) and "\ufffd" not in spelled


def test_detokenize_round_trips(base_url, fake, tokenizer):
    text = "Grüße, 世界! 🦊"
    tokens = post(base_url, "/tokenize", {"prompt": text}).json()["tokens"]
    response = post(base_url, "/detokenize", {"tokens": tokens})
    assert response.status_code == 200
    assert response.json() == {"prompt": text}
    # Special tokens come back as their text.
    assert post(base_url, "/detokenize", {"tokens": [200006, 200002]}).json() == {"prompt": "<|start|><|return|>"}


def test_tokenize_messages_as_chat_completions_renders_them(base_url, fake, tokenizer):
    response = post(base_url, "/tokenize", {"messages": HELLO, "reasoning_effort": "low"})
    assert response.status_code == 200, response.text
    body = response.json()
    chat = post(base_url, "/v1/chat/completions", {"messages": HELLO, "reasoning_effort": "low", "max_tokens": 4})
    assert body["tokens"] == fake.submitted[0].prompt_token_ids
    assert body["count"] == chat.json()["usage"]["prompt_tokens"]
    assert tokenizer.decode(body["tokens"]).endswith("<|start|>assistant")


def test_tokenize_messages_without_the_generation_prompt(base_url, fake, tokenizer):
    full = post(base_url, "/tokenize", {"messages": HELLO}).json()["tokens"]
    response = post(base_url, "/tokenize", {"messages": HELLO, "add_generation_prompt": False})
    tokens = response.json()["tokens"]
    assert full == [*tokens, 200006, *tokenizer.encode("assistant")]
    assert tokenizer.decode(tokens).endswith("What is 2 + 2?<|end|>")


def test_tokenizer_info_names_the_special_tokens(base_url, fake):
    response = httpx.get(base_url + "/tokenizer_info")
    assert response.status_code == 200
    body = response.json()
    assert (body["eos_token"], body["bos_token"], body["pad_token"]) == (
        "<|return|>",
        "<|startoftext|>",
        "<|endoftext|>",
    )
    assert (body["model_max_length"], body["vocab_size"], body["tokenizer_class"]) == (4096, 201088, "HarmonyTokenizer")


@pytest.mark.parametrize(
    ("path", "body", "param", "message"),
    [
        ("/tokenize", {}, "prompt", "Field required"),
        ("/tokenize", {"prompt": 5}, "prompt", "valid string"),
        ("/tokenize", {"prompt": "a", "messages": HELLO}, None, "either prompt or messages"),
        ("/tokenize", {"messages": []}, "messages", "at least 1"),
        ("/tokenize", {"messages": [{"role": "robot", "content": "hi"}]}, "messages[0].role", "Input should be"),
        ("/tokenize", {"messages": HELLO, "continue_final_message": True}, "continue_final_message", "not supported"),
        ("/tokenize", {"messages": HELLO, "chat_template": "{{ x }}"}, "chat_template", "harmony"),
        ("/tokenize", {"messages": HELLO, "tool_choice": "required"}, "tool_choice", "at least one tool"),
        ("/tokenize", [1, 2], None, "JSON object"),
        ("/detokenize", {"tokens": [1, 201088]}, "tokens[1]", "outside the vocabulary"),
        ("/detokenize", {"tokens": [-1]}, "tokens[0]", "outside the vocabulary"),
        ("/detokenize", {"tokens": ["1"]}, "tokens[0]", "valid integer"),
        ("/detokenize", {"tokens": 7}, "tokens", "valid list"),
    ],
)
def test_bad_input_is_a_400_in_the_openai_shape(base_url, fake, path, body, param, message):
    response = post(base_url, path, body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["type"], error["param"]) == ("invalid_request_error", param)
    assert message in error["message"]


def test_another_model_is_a_404(base_url, fake):
    response = post(base_url, "/tokenize", {"model": "gpt-5", "prompt": "hi"})
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "model_not_found"


@pytest.fixture
def small_limits():
    # The fake server runs in this process: its requests see these limits.
    saved = request_limits()
    set_request_limits(RequestLimits(max_prompt_chars=40, max_prompt_tokens=5))
    yield
    set_request_limits(saved)


def test_admission_limits_apply(base_url, fake, small_limits):
    chars = post(base_url, "/tokenize", {"prompt": "x" * 41})
    assert (chars.status_code, chars.json()["error"]["code"], chars.json()["error"]["param"]) == (
        400,
        "prompt_too_large",
        "prompt",
    )
    tokens = post(base_url, "/tokenize", {"prompt": "one two three four five six"})
    assert (tokens.status_code, tokens.json()["error"]["param"]) == (400, "prompt")
    assert "max_prompt_tokens" in tokens.json()["error"]["message"]
    chat = post(base_url, "/tokenize", {"messages": [{"role": "user", "content": "y" * 41}]})
    assert (chat.status_code, chat.json()["error"]["param"]) == (400, "messages")
    ids = post(base_url, "/detokenize", {"tokens": [1] * 6})
    assert (ids.status_code, ids.json()["error"]["param"]) == (400, "tokens")
    assert "max_prompt_tokens" in ids.json()["error"]["message"]
