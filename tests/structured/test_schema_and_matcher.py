"""Schemas compile into grammars or are refused with the grammar engine's words; a matcher's masks allow exactly
the tokens that keep a body valid, and its end token once the JSON is complete."""

from __future__ import annotations

import json
import subprocess
import sys

import jsonschema
import numpy as np
import pytest

from tkr_embed.engine.constraints import PendingMask, advance_states, resolve_masks
from tkr_embed.harmony import special_tokens as special
from tkr_embed.harmony.tokenizer import get_encoding
from tkr_embed.structured.matcher import GRAMMAR_FILLER, NUM_MASK_WORDS, PARALLEL_ADVANCE_MIN, GrammarMatcher
from tkr_embed.structured.schema import UnsupportedSchemaError, compile_schema

SCHEMA = {
    "type": "object",
    "properties": {"n": {"type": "integer", "minimum": 0, "maximum": 9}, "ok": {"type": "boolean"}},
    "required": ["n", "ok"],
    "additionalProperties": False,
}


def ids_of(mask: np.ndarray) -> list[int]:
    assert mask.shape == (NUM_MASK_WORDS,)
    return np.nonzero(np.unpackbits(mask.view(np.uint8), bitorder="little"))[0].tolist()


@pytest.mark.parametrize(
    ("schema", "words"),
    [
        ({"type": "object", "properties": {"a": {"not": {"type": "string"}}}}, 'Unimplemented keys: ["not"]'),
        ({"type": "object", "properties": {"a": {"type": "string", "format": "colour"}}}, "Unknown format: colour"),
        ({"type": "object", "properties": {"a": {"$ref": "#/$defs/missing"}}}, "does not exist"),
        ({"type": "object", "properties": {"a": {"type": "string", "pattern": "(?<=x)y"}}}, "look-around"),
        ({"type": "nonsense"}, "nonsense"),
        (["not", "an", "object"], "must be an object"),
    ],
)
def test_what_cannot_be_enforced_is_refused_in_the_engines_words(schema, words):
    with pytest.raises(UnsupportedSchemaError) as raised:
        compile_schema(schema)
    assert words in str(raised.value) and "<state>" not in str(raised.value)


def test_lenient_leaves_out_what_it_cannot_enforce_and_the_cache_keys_on_content():
    schema = {"type": "object", "properties": {"a": {"not": {"type": "string"}}}}
    assert compile_schema(schema, lenient=True).grammar
    reordered = dict(reversed(list(SCHEMA.items())))
    assert compile_schema(reordered) is compile_schema(SCHEMA)


@pytest.mark.parametrize("end_token", [special.RETURN, special.CALL])
def test_a_walk_of_allowed_tokens_is_valid_json_and_ends_with_the_end_token(end_token):
    encoding = get_encoding()
    rng = np.random.default_rng(3)
    for _ in range(10):
        matcher = GrammarMatcher(compile_schema(SCHEMA).grammar, end_token)
        tokens: list[int] = []
        while True:
            allowed = ids_of(matcher.mask())
            assert all(t < special.STARTOFTEXT or t == end_token for t in allowed)  # no other special token
            token = int(rng.choice(allowed))
            if token == end_token:
                assert allowed == [end_token]  # the object is closed: nothing else may follow
                break
            tokens.append(token)
            advance_states([(matcher, token)])
        jsonschema.validate(json.loads(encoding.decode(tokens)), SCHEMA)


def test_a_refused_token_leaves_only_the_end_token():
    matcher = GrammarMatcher(compile_schema(SCHEMA).grammar, special.CALL)
    advance_states([(matcher, get_encoding().encode("]", disallowed_special=())[0])])
    assert ids_of(matcher.mask()) == [special.CALL]


def test_a_steps_masks_filled_together_are_each_matchers_own():
    """Rows filled in one parallel call (any order, an errored matcher among them) equal each matcher's mask
    computed alone, and a free row between them is left to the engine."""
    encoding = get_encoding()
    grammar = compile_schema({"type": "object", "properties": {"s": {"type": "string"}}, "required": ["s"]}).grammar
    prefixes = ['{"s": "', '{"s": "abc', "{", '{"s": "x"', '{"s": "x"}', "]"]
    matchers = []
    for prefix in prefixes:
        matcher = GrammarMatcher(grammar, special.CALL if len(matchers) % 2 else special.RETURN)
        for token in encoding.encode(prefix, disallowed_special=()):
            advance_states([(matcher, token)])
        matchers.append(matcher)
    alone = [ids_of(matcher.mask()) for matcher in matchers]
    assert alone[-1] == [special.CALL]  # "]" errored the last matcher
    assert alone[4] == [special.RETURN]  # its object is closed
    assert len(alone[0]) > 100_000  # inside a string: most of the vocabulary
    pending = [PendingMask(_Fill(matcher)) for matcher in reversed(matchers)]
    pending.insert(2, None)
    words = resolve_masks(pending, special.VOCAB_SIZE)
    together = [ids_of(row) for row in np.delete(words, 2, axis=0)]
    assert together == alone[::-1]
    assert words[2].all() and words[2].dtype == np.uint32 and (words[2] == 0xFFFFFFFF).all()
    # into a buffer the sampler reuses (page-locked on CUDA): what it held before is gone
    reused = np.full_like(words, 0x5A5A5A5A)
    assert resolve_masks(pending, special.VOCAB_SIZE, out=reused) is reused
    assert (reused == words).all()


class _Fill:
    def __init__(self, matcher: GrammarMatcher) -> None:
        self.matcher = matcher

    def free_tokens_ahead(self) -> int:
        return 0

    def allowed_tokens(self):
        return self.matcher.mask_fill()


def test_the_harmony_engine_builds_the_grammar_tokenizer_beside_the_model() -> None:
    """Building an engine for harmony requests starts the grammar tokenizer's build on its own thread, so the first
    grammar never stalls a step for it: in a fresh process it is ready without any grammar being asked for."""
    script = """
import time
from tkr_embed.builder import build_engine
from tkr_embed.engine.args import EngineArgs
from tkr_embed.models.gpt_oss.demo import write_demo_checkpoint
from tkr_embed.structured.matcher import _build_grammar_tokenizer
import sys, tempfile, pathlib
folder = write_demo_checkpoint(pathlib.Path(tempfile.mkdtemp()), seed=0)
build_engine(EngineArgs(model=str(folder), device="cpu"))
deadline = time.monotonic() + 60
while _build_grammar_tokenizer.cache_info().currsize == 0 and time.monotonic() < deadline:
    time.sleep(0.05)
print(_build_grammar_tokenizer.cache_info().currsize, _build_grammar_tokenizer.cache_info().misses)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["1", "1"]


NESTED = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 8},
        "owner": {
            "type": "object",
            "properties": {"age": {"type": "integer"}, "tags": {"type": "array", "items": {"enum": ["a", "b"]}}},
            "required": ["age", "tags"],
        },
        "ok": {"type": "boolean"},
    },
    "required": ["name", "owner", "ok"],
}


class _CountingPool:
    """The grammar engine's thread pool, counting the parallel advances it is given."""

    def __init__(self, pool) -> None:
        self.pool = pool
        self.parallel_advances = 0

    def consume_token_par(self, jobs):
        self.parallel_advances += 1
        return self.pool.consume_token_par(jobs)


def test_a_steps_tokens_taken_together_leave_each_matcher_as_taking_them_alone(monkeypatch):
    """Matchers whose tokens are taken in one parallel call (a refused one among them) mask as matchers that took
    the same tokens one by one; the refused one allows only its end token."""
    grammar = compile_schema(NESTED).grammar
    pool = _CountingPool(GRAMMAR_FILLER._pool())
    monkeypatch.setattr(GRAMMAR_FILLER, "_pool", lambda: pool)
    # Each matcher begins with a prefix (into the nested object and its array; the grammar orders the properties
    # by name), then takes random allowed tokens.
    body = '{"name": "ab", "ok": true, "owner": {"age": 12, "tags": ["a", "b"'
    prefixes = [body[:cut] for cut in (0, 1, 11, 22, 36, 46, 56, 60, 62, len(body))]
    script = [get_encoding().encode(prefix, disallowed_special=()) for prefix in prefixes]
    end_tokens = [special.CALL if index % 2 else special.RETURN for index in range(10)]
    together = [GrammarMatcher(grammar, end_token) for end_token in end_tokens]
    alone = [GrammarMatcher(grammar, end_token) for end_token in end_tokens]
    rng = np.random.default_rng(7)
    for step in range(30):
        pairs = []
        for index, matcher in enumerate(alone):
            allowed = [token for token in ids_of(matcher.mask()) if token != matcher.end_token]
            if not allowed:
                continue
            if (step, index) == (9, 3):
                pairs.append((index, min(set(range(special.STARTOFTEXT)) - set(allowed))))
            elif step < len(script[index]):
                pairs.append((index, script[index][step]))
            else:
                pairs.append((index, int(rng.choice(allowed))))
        assert len(pairs) >= PARALLEL_ADVANCE_MIN
        advance_states([(together[index], token) for index, token in pairs])
        for index, token in pairs:
            advance_states([(alone[index], token)])
        assert [ids_of(matcher.mask()) for matcher in together] == [ids_of(matcher.mask()) for matcher in alone]
    assert [matcher._matcher.is_error() for matcher in together] == [index == 3 for index in range(10)]
    assert ids_of(together[3].mask()) == [special.CALL]
    assert pool.parallel_advances == 30  # the one-by-one matchers never reached the pool
