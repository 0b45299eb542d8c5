"""A GGUF of gpt-oss's shape with random weights, for llama.cpp's benchmark tools (bench/gpu_peers_llamacpp.sh).

    python bench/random_gguf.py --shape 20b OUT.gguf     # 12.1 GB: MXFP4 experts, Q8_0 attention and embeddings
    python bench/random_gguf.py --shape tiny OUT.gguf    # 2 layers, 34 MiB (the vocabulary rows dominate)

The tensors and keys are those llama.cpp's `gpt-oss` loader reads, in the types its converter writes for the Hub
checkpoint: experts MXFP4 (GGML type 39, blocks of 32 values in 17 bytes), 1-D tensors, biases and the router F32,
the other matrices Q8_0 as in the GGUF llama.cpp's authors publish for gpt-oss-20b (`--dense-type bf16`: the Hub
checkpoint's own bf16, as our engine keeps them). The tokenizer is the real one: the o200k vocabulary and its BPE
merges (from the offline copy tkr_embed loads), the harmony special tokens, bos/eos/pad ids; llama.cpp refuses a
model whose vocabulary it cannot build. Values are random but bounded (|w| < 0.1), so activations stay finite and
expert routing stays spread, as a benchmark needs; the text the model would write is noise.
Writes tensor by tensor: memory holds one tensor at a time (the largest, the embedding: 0.6 GB at 20b in Q8_0).
Needs the `gguf` package (llama.cpp's gguf-py: `PYTHONPATH=<llama.cpp>/gguf-py`).
"""

from __future__ import annotations

import argparse
import base64
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tkr_embed.harmony import special_tokens  # noqa: E402
from tkr_embed.harmony.vocab import ensure_vocab  # noqa: E402
from tkr_embed.models.gpt_oss.config import GptOssConfig  # noqa: E402

try:
    import gguf
except ModuleNotFoundError:  # pragma: no cover - the message is the point
    sys.exit("random_gguf.py needs the gguf package: PYTHONPATH=<llama.cpp source>/gguf-py, or pip install gguf")

ARCH = "gpt-oss"
BLOCK = 32  # values a block of MXFP4 and of Q8_0
MXFP4_BLOCK_BYTES = 17  # one E8M0 scale byte, then 16 bytes of FP4 (E2M1) pairs
Q8_0_BLOCK_BYTES = 34  # one f16 scale, then 32 int8
DENSE_TYPES = {"q8_0": gguf.GGMLQuantizationType.Q8_0, "bf16": gguf.GGMLQuantizationType.BF16}
SHAPES = {
    "20b": GptOssConfig.gpt_oss_20b(),
    "120b": GptOssConfig.gpt_oss_120b(),
    # head_dim 64 as the real model: the CUDA flash-attention kernels exist for a few head sizes only
    "tiny": GptOssConfig(
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        num_local_experts=4,
        num_experts_per_tok=2,
        intermediate_size=64,
    ),
}
# the named special tokens of the o200k_harmony encoding; its other ids up to the vocabulary size are reserved
SPECIAL_NAMES = {
    special_tokens.STARTOFTEXT: "<|startoftext|>",
    special_tokens.ENDOFTEXT: "<|endoftext|>",
    special_tokens.RETURN: "<|return|>",
    special_tokens.CONSTRAIN: "<|constrain|>",
    special_tokens.CHANNEL: "<|channel|>",
    special_tokens.START: "<|start|>",
    special_tokens.END: "<|end|>",
    special_tokens.MESSAGE: "<|message|>",
    special_tokens.CALL: "<|call|>",
}


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int, ...]  # numpy order: the reverse of ggml's ne
    ggml_type: gguf.GGMLQuantizationType
    fill: str  # "random", "ones" or "zeros"

    @property
    def nbytes(self) -> int:
        block, block_bytes = gguf.GGML_QUANT_SIZES[self.ggml_type]
        return int(np.prod(self.shape)) // block * block_bytes

    @property
    def byte_shape(self) -> tuple[int, ...]:
        """The shape the writer takes for quantized data: bytes along the last axis."""
        if self.ggml_type not in (gguf.GGMLQuantizationType.MXFP4, gguf.GGMLQuantizationType.Q8_0):
            return self.shape
        return (*self.shape[:-1], self.shape[-1] // BLOCK * gguf.GGML_QUANT_SIZES[self.ggml_type][1])


def tensor_specs(config: GptOssConfig, dense: gguf.GGMLQuantizationType) -> list[TensorSpec]:
    """Every tensor llama.cpp's gpt-oss loader asks for, named and shaped as it creates them."""
    F32, MXFP4 = gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.MXFP4
    T = gguf.MODEL_TENSOR

    def name(tensor: gguf.MODEL_TENSOR, suffix: str, bid: int | None = None) -> str:
        return gguf.TENSOR_NAMES[tensor].format(bid=bid) + "." + suffix

    embd, vocab, ff, experts = config.hidden_size, config.vocab_size, config.intermediate_size, config.num_local_experts
    q_dim = config.num_attention_heads * config.head_dim
    kv_dim = config.num_key_value_heads * config.head_dim
    specs = [TensorSpec(name(T.TOKEN_EMBD, "weight"), (vocab, embd), dense, "random")]
    for bid in range(config.num_hidden_layers):
        specs += [
            TensorSpec(name(T.ATTN_NORM, "weight", bid), (embd,), F32, "ones"),
            TensorSpec(name(T.ATTN_POST_NORM, "weight", bid), (embd,), F32, "ones"),
            TensorSpec(name(T.ATTN_Q, "weight", bid), (q_dim, embd), dense, "random"),
            TensorSpec(name(T.ATTN_Q, "bias", bid), (q_dim,), F32, "random"),
            TensorSpec(name(T.ATTN_K, "weight", bid), (kv_dim, embd), dense, "random"),
            TensorSpec(name(T.ATTN_K, "bias", bid), (kv_dim,), F32, "random"),
            TensorSpec(name(T.ATTN_V, "weight", bid), (kv_dim, embd), dense, "random"),
            TensorSpec(name(T.ATTN_V, "bias", bid), (kv_dim,), F32, "random"),
            TensorSpec(name(T.ATTN_OUT, "weight", bid), (embd, q_dim), dense, "random"),
            TensorSpec(name(T.ATTN_OUT, "bias", bid), (embd,), F32, "random"),
            TensorSpec(name(T.ATTN_SINKS, "weight", bid), (config.num_attention_heads,), F32, "zeros"),
            TensorSpec(name(T.FFN_GATE_INP, "weight", bid), (experts, embd), F32, "random"),
            TensorSpec(name(T.FFN_GATE_INP, "bias", bid), (experts,), F32, "random"),
            TensorSpec(name(T.FFN_GATE_EXP, "weight", bid), (experts, ff, embd), MXFP4, "random"),
            TensorSpec(name(T.FFN_GATE_EXP, "bias", bid), (experts, ff), F32, "random"),
            TensorSpec(name(T.FFN_UP_EXP, "weight", bid), (experts, ff, embd), MXFP4, "random"),
            TensorSpec(name(T.FFN_UP_EXP, "bias", bid), (experts, ff), F32, "random"),
            TensorSpec(name(T.FFN_DOWN_EXP, "weight", bid), (experts, embd, ff), MXFP4, "random"),
            TensorSpec(name(T.FFN_DOWN_EXP, "bias", bid), (experts, embd), F32, "random"),
        ]
    specs += [
        TensorSpec(name(T.OUTPUT_NORM, "weight"), (embd,), F32, "ones"),
        TensorSpec(name(T.OUTPUT, "weight"), (vocab, embd), dense, "random"),
    ]
    return specs


def random_data(spec: TensorSpec, rng: np.random.Generator) -> np.ndarray:
    """Random bits shaped into small finite values: no float arithmetic over billions of weights."""
    F32, BF16 = gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.BF16
    if spec.fill != "random":
        return np.full(spec.shape, 1.0 if spec.fill == "ones" else 0.0, dtype=np.float32)
    raw = rng.bit_generator.random_raw(-(-spec.nbytes // 8)).view(np.uint8)[: spec.nbytes]
    if spec.ggml_type == gguf.GGMLQuantizationType.MXFP4:
        blocks = raw.reshape(-1, MXFP4_BLOCK_BYTES)
        blocks[:, 0] = 118 + (blocks[:, 0] & 3)  # E8M0 scales 2^-9..2^-6: FP4 values (|v| <= 6) stay below 0.1
        return raw.reshape(spec.byte_shape)
    if spec.ggml_type == gguf.GGMLQuantizationType.Q8_0:
        blocks = raw.reshape(-1, Q8_0_BLOCK_BYTES)
        blocks[:, 1] = 3 << 2  # the f16 scale's high byte: exponent field 3, so 2^-12 and up; |int8 * scale| < 0.04
        return raw.reshape(spec.byte_shape)
    if spec.ggml_type == BF16:  # sign, exponent 2^-7, random mantissa: |w| in [2^-7, 2^-6)
        return ((raw.view(np.uint16) & 0x807F) | (120 << 7)).reshape(spec.shape)
    assert spec.ggml_type == F32, spec
    return ((raw.view(np.uint32) & 0x807FFFFF) | (120 << 23)).view(np.float32).reshape(spec.shape)


# -- the tokenizer ------------------------------------------------------------------------------------------------


def byte_level_alphabet() -> list[str]:
    """GPT-2's byte-level BPE: each byte as a printable character, the form llama.cpp's "gpt2" vocabularies use."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    alphabet, extra = {}, 0
    for byte in range(256):
        if byte in printable:
            alphabet[byte] = chr(byte)
        else:
            alphabet[byte] = chr(256 + extra)
            extra += 1
    return [alphabet[byte] for byte in range(256)]


def load_ranks() -> list[bytes]:
    """The o200k mergeable tokens in rank order (rank = token id)."""
    tokens = []
    for line in ensure_vocab().read_bytes().splitlines():
        encoded, rank = line.split()
        assert int(rank) == len(tokens), "o200k_base ranks are the ids 0, 1, 2, ... in order"
        tokens.append(base64.b64decode(encoded))
    return tokens


def bpe_merges(tokens: list[bytes]) -> Iterator[tuple[bytes, bytes]]:
    """The merge that makes each multi-byte token, in rank order: BPE on its bytes with only lower ranks allowed
    ends in exactly two parts, which is the pair tiktoken merges last."""
    ranks = {token: rank for rank, token in enumerate(tokens)}
    for rank, token in enumerate(tokens):
        if len(token) < 2:
            continue
        parts = [token[i : i + 1] for i in range(len(token))]
        while len(parts) > 2:
            best, best_rank = -1, rank
            for i in range(len(parts) - 1):
                pair_rank = ranks.get(parts[i] + parts[i + 1], rank)
                if pair_rank < best_rank:
                    best, best_rank = i, pair_rank
            if best < 0:
                break
            parts[best : best + 2] = [parts[best] + parts[best + 1]]
        assert len(parts) == 2, f"token {rank} is not the merge of two lower-ranked tokens"
        yield parts[0], parts[1]


def add_tokenizer(writer: gguf.GGUFWriter, vocab_size: int) -> None:
    alphabet = byte_level_alphabet()

    def text(token: bytes) -> str:
        return "".join(alphabet[byte] for byte in token)

    ranked = load_ranks()
    tokens = [text(token) for token in ranked]
    types = [gguf.TokenType.NORMAL] * len(tokens)
    for token_id in range(len(tokens), vocab_size):
        tokens.append(SPECIAL_NAMES.get(token_id, f"<|reserved_{token_id}|>"))
        types.append(gguf.TokenType.CONTROL)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("gpt-4o")  # the o200k pre-tokenizer regex
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges([f"{text(left)} {text(right)}" for left, right in bpe_merges(ranked)])
    writer.add_bos_token_id(special_tokens.STARTOFTEXT)
    writer.add_eos_token_id(special_tokens.RETURN)
    writer.add_pad_token_id(special_tokens.ENDOFTEXT)


def add_hparams(writer: gguf.GGUFWriter, config: GptOssConfig, shape: str) -> None:
    writer.add_name(f"gpt-oss {shape} shape, random weights")
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_MXFP4_MOE)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_expert_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_key_length(config.head_dim)
    writer.add_value_length(config.head_dim)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_expert_count(config.num_local_experts)
    writer.add_expert_used_count(config.num_experts_per_tok)
    writer.add_sliding_window(config.sliding_window)
    writer.add_rope_freq_base(config.rope_theta)
    yarn = config.rope_scaling
    writer.add_rope_scaling_type(gguf.RopeScalingType.YARN)
    writer.add_rope_scaling_factor(yarn["factor"])
    writer.add_rope_scaling_orig_ctx_len(yarn["original_max_position_embeddings"])
    writer.add_rope_scaling_yarn_beta_fast(yarn["beta_fast"])
    writer.add_rope_scaling_yarn_beta_slow(yarn["beta_slow"])


def write_gguf(path: Path, shape: str, dense: str = "q8_0", seed: int = 0) -> int:
    """Write the file; return its size in bytes."""
    config = SHAPES[shape]
    specs = tensor_specs(config, DENSE_TYPES[dense])
    writer = gguf.GGUFWriter(path, ARCH)
    add_hparams(writer, config, shape)
    add_tokenizer(writer, config.vocab_size)
    for spec in specs:
        dtype = {gguf.GGMLQuantizationType.F32: np.float32, gguf.GGMLQuantizationType.BF16: np.uint16}.get(
            spec.ggml_type, np.uint8
        )
        writer.add_tensor_info(spec.name, spec.byte_shape, np.dtype(dtype), spec.nbytes, raw_dtype=spec.ggml_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    rng = np.random.default_rng(seed)
    for spec in specs:
        writer.write_tensor_data(random_data(spec, rng))
    writer.close()
    return path.stat().st_size


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="the .gguf file to write")
    parser.add_argument("--shape", choices=sorted(SHAPES), default="20b")
    parser.add_argument("--dense-type", choices=sorted(DENSE_TYPES), default="q8_0", help="attention, embeddings")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    started = time.perf_counter()
    size = write_gguf(args.out, args.shape, args.dense_type, args.seed)
    print(f"{args.out}: {size / 2**30:.2f} GiB, {args.shape} shape, in {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
