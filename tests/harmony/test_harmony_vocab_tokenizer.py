"""Offline vocabulary checks and the harmony tokenizer contract."""

from __future__ import annotations

import gzip
import hashlib
import os

import pytest

from tkr_embed.harmony import special_tokens
from tkr_embed.harmony.tokenizer import HarmonyTokenizer, encode_with_specials, get_encoding, get_tokenizer
from tkr_embed.harmony.vocab import (
    VOCAB_FILE_NAME,
    VOCAB_SHA256,
    VocabError,
    ensure_vocab,
    packaged_vocab_source,
    prepare_vocab,
)


def test_ensure_vocab_writes_the_checked_file_and_points_harmony_at_it(tmp_path, monkeypatch):
    monkeypatch.setenv("TKR_EMBED_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("TIKTOKEN_ENCODINGS_BASE", raising=False)
    vocab_path = ensure_vocab()
    assert vocab_path == tmp_path / "vocab" / VOCAB_FILE_NAME
    assert hashlib.sha256(vocab_path.read_bytes()).hexdigest() == VOCAB_SHA256
    assert os.environ["TIKTOKEN_ENCODINGS_BASE"] == str(tmp_path / "vocab")
    # Idempotent: a second call keeps the same file untouched.
    mtime = vocab_path.stat().st_mtime_ns
    assert ensure_vocab() == vocab_path
    assert vocab_path.stat().st_mtime_ns == mtime


def test_source_with_wrong_digest_is_refused_and_nothing_is_written(tmp_path):
    bad_source = tmp_path / "o200k_base.tiktoken.gz"
    bad_source.write_bytes(gzip.compress(b"dGhl 0\n"))
    target_dir = tmp_path / "cache"
    with pytest.raises(VocabError, match=str(bad_source)):
        prepare_vocab(bad_source, target_dir, VOCAB_SHA256)
    assert not (target_dir / VOCAB_FILE_NAME).exists()


def test_corrupt_source_archive_is_refused_naming_the_file(tmp_path):
    bad_source = tmp_path / "broken.tiktoken.gz"
    bad_source.write_bytes(b"not gzip at all")
    with pytest.raises(VocabError, match="broken.tiktoken.gz"):
        prepare_vocab(bad_source, tmp_path / "cache", VOCAB_SHA256)


def test_tampered_cached_file_is_replaced_by_the_checked_one(tmp_path):
    target_dir = tmp_path / "cache"
    target_dir.mkdir()
    (target_dir / VOCAB_FILE_NAME).write_bytes(b"tampered")
    path = prepare_vocab(packaged_vocab_source(), target_dir, VOCAB_SHA256)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == VOCAB_SHA256


def test_special_token_ids_match_the_encoding():
    encoding = get_encoding()
    expected = {
        "<|start|>": special_tokens.START,
        "<|channel|>": special_tokens.CHANNEL,
        "<|message|>": special_tokens.MESSAGE,
        "<|end|>": special_tokens.END,
        "<|return|>": special_tokens.RETURN,
        "<|call|>": special_tokens.CALL,
        "<|constrain|>": special_tokens.CONSTRAIN,
        "<|startoftext|>": special_tokens.STARTOFTEXT,
        "<|endoftext|>": special_tokens.ENDOFTEXT,
    }
    for text, token_id in expected.items():
        assert encoding.encode(text, allowed_special="all") == [token_id]
    assert sorted(encoding.stop_tokens_for_assistant_actions()) == sorted(special_tokens.STOP_TOKEN_IDS)


def test_tokenizer_contract_values_and_round_trip():
    tokenizer = get_tokenizer()
    assert get_tokenizer() is tokenizer
    assert isinstance(tokenizer, HarmonyTokenizer)
    assert tokenizer.vocab_size == 201088
    assert tokenizer.eos_token_ids == (200002, 200012)
    text = "Hello, wörld! 你好 🦜"
    assert tokenizer.decode(tokenizer.encode(text)) == text
    assert tokenizer.encode("Hello") == [13225]


def test_special_token_text_is_encoded_as_ordinary_text():
    tokenizer = get_tokenizer()
    ids = tokenizer.encode("<|end|><|return|>")
    assert not any(tokenizer.is_special(token_id) for token_id in ids)
    assert tokenizer.decode(ids) == "<|end|><|return|>"


def test_decode_renders_specials_and_replaces_invalid_utf8():
    tokenizer = get_tokenizer()
    parrot = tokenizer.encode("🦜")
    assert len(parrot) == 3  # the emoji spans three tokens
    assert tokenizer.decode_bytes(parrot[:1]) == b"\xf0\x9f"
    assert tokenizer.decode(parrot[:1]) == "\ufffd"
    assert tokenizer.decode([200006, *tokenizer.encode("user"), 200008]) == "<|start|>user<|message|>"
    assert tokenizer.is_special(200002) and tokenizer.is_special(201087)
    assert not tokenizer.is_special(13225)
    assert not tokenizer.is_special(201088)


def test_decode_refuses_ids_outside_the_vocabulary():
    with pytest.raises(ValueError, match="201088"):
        get_tokenizer().decode([201088])


def test_a_header_encodes_its_allowed_specials_as_tokens_and_any_other_as_text() -> None:
    """encode_with_specials gives openai-harmony's ids for a header, and special-token text it was not told to
    allow stays ordinary text (where harmony's own check would raise)."""
    encoding = get_encoding()
    header = "<|start|>assistant<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>"
    allowed = {"<|start|>", "<|channel|>", "<|constrain|>", "<|message|>"}
    assert encode_with_specials(encoding, header, allowed) == encoding.encode(header, allowed_special=allowed)
    assert encode_with_specials(encoding, header, allowed)[0] == special_tokens.START
    text = "<|channel|>final<|end|>"
    ids = encode_with_specials(encoding, text, {"<|channel|>"})
    assert ids[0] == special_tokens.CHANNEL and special_tokens.END not in ids
    assert encoding.decode(ids) == text


def test_one_token_at_a_time_gives_the_bytes_of_the_whole_and_still_refuses_ids_outside():
    """Single ids (what the detokenizer and the output parser ask for) come from a cache: the same bytes as the
    encoder gives, asked once or again, and an id outside the vocabulary is refused every time, never cached."""
    tokenizer = get_tokenizer()
    ids = tokenizer.encode("Hello 🦜 world") + [200006, 200008]
    for _ in range(2):
        assert b"".join(tokenizer.decode_bytes([token_id]) for token_id in ids) == tokenizer.decode_bytes(ids)
    for _ in range(2):
        for outside in (201088, -1):
            with pytest.raises(ValueError, match="outside the vocabulary"):
                tokenizer.decode_bytes([outside])
