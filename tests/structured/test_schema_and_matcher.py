"""Schemas compile into grammars or are refused with the grammar engine's words; a matcher's masks allow exactly
the tokens that keep a body valid, and its end token once the JSON is complete."""

from __future__ import annotations

import json

import jsonschema
import numpy as np
import pytest

from tkr_embed.harmony import special_tokens as special
from tkr_embed.harmony.tokenizer import get_encoding
from tkr_embed.structured.matcher import NUM_MASK_WORDS, GrammarMatcher
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
            matcher.advance(token)
        jsonschema.validate(json.loads(encoding.decode(tokens)), SCHEMA)


def test_a_refused_token_leaves_only_the_end_token():
    matcher = GrammarMatcher(compile_schema(SCHEMA).grammar, special.CALL)
    matcher.advance(get_encoding().encode("]", disallowed_special=())[0])
    assert ids_of(matcher.mask()) == [special.CALL]
