"""bench/random_gguf.py writes what llama.cpp's gpt-oss loader reads: read back with llama.cpp's own GGUF reader."""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest

gguf = pytest.importorskip("gguf")  # in the dev lock; the GPU machine uses the copy inside the llama.cpp source
pytestmark = pytest.mark.slow  # the o200k merges and llama.cpp's reader of 400,000 strings: half a minute

from bench_support import load_bench_module  # noqa: E402

from tkr_embed.harmony.tokenizer import get_tokenizer  # noqa: E402

Q = gguf.GGMLQuantizationType
# llama.cpp's loader (src/models/openai-moe.cpp) asks for these, with ggml's ne (fastest axis first); tiny shape:
# hidden 64, 4 query heads and 2 KV heads of 64, 4 experts of width 64, the o200k vocabulary of 201,088 rows
VOCAB = 201088
GLOBAL_TENSORS = {
    "token_embd.weight": ([64, VOCAB], Q.Q8_0),
    "output_norm.weight": ([64], Q.F32),
    "output.weight": ([64, VOCAB], Q.Q8_0),
}
LAYER_TENSORS = {
    "attn_norm.weight": ([64], Q.F32),
    "post_attention_norm.weight": ([64], Q.F32),
    "attn_q.weight": ([64, 256], Q.Q8_0),
    "attn_q.bias": ([256], Q.F32),
    "attn_k.weight": ([64, 128], Q.Q8_0),
    "attn_k.bias": ([128], Q.F32),
    "attn_v.weight": ([64, 128], Q.Q8_0),
    "attn_v.bias": ([128], Q.F32),
    "attn_output.weight": ([256, 64], Q.Q8_0),
    "attn_output.bias": ([64], Q.F32),
    "attn_sinks.weight": ([4], Q.F32),
    "ffn_gate_inp.weight": ([64, 4], Q.F32),
    "ffn_gate_inp.bias": ([4], Q.F32),
    "ffn_gate_exps.weight": ([64, 64, 4], Q.MXFP4),
    "ffn_gate_exps.bias": ([64, 4], Q.F32),
    "ffn_up_exps.weight": ([64, 64, 4], Q.MXFP4),
    "ffn_up_exps.bias": ([64, 4], Q.F32),
    "ffn_down_exps.weight": ([64, 64, 4], Q.MXFP4),
    "ffn_down_exps.bias": ([64, 4], Q.F32),
}


@pytest.fixture(scope="module")
def reader(tmp_path_factory: pytest.TempPathFactory) -> gguf.GGUFReader:
    path = tmp_path_factory.mktemp("gguf") / "tiny.gguf"
    load_bench_module("random_gguf").write_gguf(path, "tiny")
    return gguf.GGUFReader(path)


@pytest.fixture(scope="module")
def vocab(reader: gguf.GGUFReader) -> tuple[list[str], list[str]]:
    """The token texts and the merges."""
    return value(reader, "tokenizer.ggml.tokens"), value(reader, "tokenizer.ggml.merges")


def value(reader: gguf.GGUFReader, key: str):
    field = reader.get_field(key)
    assert field is not None, f"{key} is missing"
    return field.contents()


def test_the_model_keys_are_gpt_oss_s_with_the_tiny_shape(reader: gguf.GGUFReader) -> None:
    expected = {
        "general.architecture": "gpt-oss",
        "general.file_type": int(gguf.LlamaFileType.MOSTLY_MXFP4_MOE),
        "gpt-oss.block_count": 2,
        "gpt-oss.context_length": 131072,
        "gpt-oss.embedding_length": 64,
        "gpt-oss.feed_forward_length": 64,
        "gpt-oss.expert_feed_forward_length": 64,
        "gpt-oss.attention.head_count": 4,
        "gpt-oss.attention.head_count_kv": 2,
        "gpt-oss.attention.key_length": 64,
        "gpt-oss.attention.value_length": 64,
        "gpt-oss.attention.sliding_window": 128,
        "gpt-oss.expert_count": 4,
        "gpt-oss.expert_used_count": 2,
        "gpt-oss.rope.freq_base": 150000.0,
        "gpt-oss.rope.scaling.type": "yarn",
        "gpt-oss.rope.scaling.factor": 32.0,
        "gpt-oss.rope.scaling.original_context_length": 4096,
    }
    assert {key: value(reader, key) for key in expected} == expected
    assert value(reader, "gpt-oss.attention.layer_norm_rms_epsilon") == pytest.approx(1e-5)


def test_every_tensor_has_the_name_type_and_shape_the_loader_asks_for(reader: gguf.GGUFReader) -> None:
    expected = dict(GLOBAL_TENSORS)
    for bid in range(2):
        expected |= {f"blk.{bid}.{name}": spec for name, spec in LAYER_TENSORS.items()}
    found = {tensor.name: ([int(n) for n in tensor.shape], Q(tensor.tensor_type)) for tensor in reader.tensors}
    assert found == expected


def test_weights_are_small_and_finite(reader: gguf.GGUFReader) -> None:
    tensors = {tensor.name: tensor for tensor in reader.tensors}
    experts = np.asarray(tensors["blk.1.ffn_down_exps.weight"].data).reshape(-1, 17)
    assert set(np.unique(experts[:, 0])) <= {118, 119, 120, 121}  # E8M0 scales 2^-9 .. 2^-6
    q8_0 = np.asarray(tensors["blk.0.attn_q.weight"].data).reshape(-1, 34)
    scales = q8_0[:, :2].copy().view(np.float16).astype(np.float32)
    assert scales.min() >= 2**-12 and scales.max() < 2**-11  # times int8: |w| < 2^-4
    assert np.all(np.asarray(tensors["output_norm.weight"].data) == 1.0)
    biases = np.asarray(tensors["blk.0.ffn_gate_exps.bias"].data)
    assert np.all(np.isfinite(biases)) and np.abs(biases).max() < 2**-6


def test_bf16_matrices_are_small_and_finite() -> None:
    module = load_bench_module("random_gguf")
    spec = module.TensorSpec("blk.0.attn_q.weight", (256, 64), Q.BF16, "random")
    bits = module.random_data(spec, np.random.default_rng(0))
    assert bits.shape == (256, 64) and bits.nbytes == spec.nbytes
    magnitudes = np.abs((bits.astype(np.uint32) << 16).view(np.float32))
    assert magnitudes.min() >= 2**-7 and magnitudes.max() < 2**-6


def test_the_vocabulary_is_o200k_harmony(reader: gguf.GGUFReader, vocab: tuple[list[str], list[str]]) -> None:
    tokenizer = get_tokenizer()
    tokens, types = vocab[0], value(reader, "tokenizer.ggml.token_type")
    assert value(reader, "tokenizer.ggml.model") == "gpt2"
    assert value(reader, "tokenizer.ggml.pre") == "gpt-4o"
    assert len(tokens) == len(types) == VOCAB
    assert [value(reader, f"tokenizer.ggml.{name}_token_id") for name in ("bos", "eos", "padding")] == [
        199998,
        200002,
        199999,
    ]
    special = range(199998, VOCAB)
    assert [tokens[i] for i in special] == [tokenizer.decode_bytes([i]).decode() for i in special]
    assert {types[i] for i in special} == {int(gguf.TokenType.CONTROL)}
    assert {types[i] for i in range(199998)} == {int(gguf.TokenType.NORMAL)}
    # byte-level text: each character stands for one byte; "Ġ" is the space
    alphabet = {char: byte for byte, char in enumerate(load_bench_module("random_gguf").byte_level_alphabet())}
    for token_id in (0, 220, 1000, 10346, 180692, 199997):
        assert bytes(alphabet[char] for char in tokens[token_id]) == tokenizer.decode_bytes([token_id])


def byte_level_bpe(text: str, ranks: dict[tuple[str, str], int], tokens: list[str]) -> list[int]:
    """llama.cpp's BPE on one pre-tokenized word: merge the lowest-ranked adjacent pair until none is listed."""
    alphabet = load_bench_module("random_gguf").byte_level_alphabet()
    parts = [alphabet[byte] for byte in text.encode()]
    while True:
        pairs = [(ranks.get((left, right), len(ranks)), i) for i, (left, right) in enumerate(pairwise(parts))]
        rank, i = min(pairs, default=(len(ranks), -1))
        if rank == len(ranks):
            break
        parts[i : i + 2] = [parts[i] + parts[i + 1]]
    ids = {token: token_id for token_id, token in enumerate(tokens)}
    return [ids[part] for part in parts]


def test_the_merges_tokenize_words_as_o200k_does(vocab: tuple[list[str], list[str]]) -> None:
    tokens, merges = vocab
    ranks = {tuple(merge.split(" ")): rank for rank, merge in enumerate(merges)}
    # each a single piece for the pre-tokenizer (digits go in threes)
    for word in (" unbelievably", "tokenization", " Benchmark", " Straße", " 東京", "😀", "123"):
        assert byte_level_bpe(word, ranks, tokens) == get_tokenizer().encode(word), word


def test_the_tensors_follow_each_other_aligned_to_the_end_of_the_file(reader: gguf.GGUFReader) -> None:
    """Written one after another in the order of their infos, so a 13 GB file never sits in memory."""
    tensors = reader.tensors
    alignment = 32  # GGUF's default, which the file does not override
    assert reader.get_field("general.alignment") is None
    assert all(tensor.data_offset % alignment == 0 for tensor in tensors)
    assert all(b.data_offset == a.data_offset + -(-a.n_bytes // alignment) * alignment for a, b in pairwise(tensors))
    assert tensors[-1].data_offset + tensors[-1].n_bytes == Path(reader.data.filename).stat().st_size
