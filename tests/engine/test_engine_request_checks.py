"""check_request: what no engine can serve is refused by name, whichever process checks it."""

from __future__ import annotations

import pytest

from tkr_embed.engine.errors import InvalidRequestError
from tkr_embed.engine.llm_engine import check_request, ids_in_vocabulary
from tkr_embed.engine.sampling_params import SamplingParams

VOCAB = 1000


@pytest.mark.parametrize(
    ("ids", "ok"),
    [
        ([0, 5, VOCAB - 1], True),
        ([5, VOCAB], False),
        ([-1, 5], False),
        ([5, 6.0], False),  # a float is not a token id, even a whole one
        ([5, "6"], False),
        ([True, 5], True),  # bool is an int subclass, as Python's isinstance says
        ([5, None], False),
    ],
)
def test_ids_in_vocabulary(ids, ok):
    assert ids_in_vocabulary(ids, VOCAB) is ok


@pytest.mark.parametrize(
    ("ids", "max_tokens", "param", "message"),
    [
        ([], 4, "prompt", "must not be empty"),
        ([1] * 64, 4, "prompt", "at most 63 fit"),
        ([1, VOCAB], 4, "prompt", f"integers in [0, {VOCAB})"),
        ([1] * 60, 5, "max_tokens", "exceeds the context length of 64"),
    ],
)
def test_refusals_name_the_field(ids, max_tokens, param, message):
    with pytest.raises(InvalidRequestError) as refused:
        check_request(ids, SamplingParams(max_tokens=max_tokens), 64, VOCAB, has_tokenizer=True)
    assert refused.value.param == param and message in refused.value.message


def test_a_request_that_fits_passes():
    check_request([1] * 60, SamplingParams(max_tokens=4), 64, VOCAB, has_tokenizer=True)
