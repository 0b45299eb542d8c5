"""Estimate of a whole gpt-oss-20b decode step on one GPU; prints one JSON object.

    python bench/gpu_decode_step.py --batch 1 64 --context 1024

24 layers of random weights in the real 20b shape: bf16 dense parts through cuBLAS, MXFP4 experts
and paged attention (sinks, 128-token window on even layers) through our Triton kernels, greedy
argmax on the GPU; the whole step is one CUDA graph per batch size (CudaGraphSteps).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from tkr_embed.backends.torch.cuda_graphs import CudaGraphSteps
from tkr_embed.backends.torch.kernels.attention_reference import write_kv_cache
from tkr_embed.backends.torch.kernels.moe_weights import MoeWeights
from tkr_embed.backends.torch.kernels.mxfp4_moe import mxfp4_moe
from tkr_embed.backends.torch.kernels.mxfp4_reference import route_topk
from tkr_embed.backends.torch.kernels.paged_attention import paged_decode_attention
from tkr_embed.backends.torch.kernels.random_cases import make_moe_weights

HIDDEN, HEADS, KV_HEADS, HEAD_DIM, EXPERTS, TOP_K, LAYERS, VOCAB = 2880, 64, 8, 64, 32, 4, 24, 201088
WINDOW, BLOCK_SIZE, ROPE_THETA = 128, 16, 150000.0
QKV = (HEADS + 2 * KV_HEADS) * HEAD_DIM


@dataclass
class Layer:
    norm1: torch.Tensor
    qkv_w: torch.Tensor      # [QKV, D]
    qkv_b: torch.Tensor
    o_w: torch.Tensor        # [D, Hq*hd]
    o_b: torch.Tensor
    sinks: torch.Tensor      # [Hq]
    norm2: torch.Tensor
    router_w: torch.Tensor   # [E, D]
    router_b: torch.Tensor
    experts: MoeWeights
    kv_cache: torch.Tensor   # [2, NB, B, Hkv, hd]
    window: int


def rand(*shape: int, std: float = 0.02) -> torch.Tensor:
    return (torch.randn(*shape, device="cuda") * std).to(torch.bfloat16)


def rms_norm(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    xf = x.float()
    return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + 1e-5)).to(x.dtype) * weight


def rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    # x [B, H, hd]; cos/sin [B, 1, hd/2]; halves rotated (gpt-oss's layout)
    x1, x2 = x.float().chunk(2, dim=-1)
    return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1).to(x.dtype)


def build(num_blocks: int) -> tuple[list[Layer], torch.Tensor, torch.Tensor, torch.Tensor]:
    layers = []
    for index in range(LAYERS):
        kv = torch.randn(2, num_blocks, BLOCK_SIZE, KV_HEADS, HEAD_DIM, device="cuda").to(torch.bfloat16)
        layers.append(Layer(
            norm1=torch.ones(HIDDEN, device="cuda", dtype=torch.bfloat16), qkv_w=rand(QKV, HIDDEN), qkv_b=rand(QKV),
            o_w=rand(HIDDEN, HEADS * HEAD_DIM), o_b=rand(HIDDEN), sinks=torch.randn(HEADS, device="cuda"),
            norm2=torch.ones(HIDDEN, device="cuda", dtype=torch.bfloat16), router_w=rand(EXPERTS, HIDDEN, std=1.0),
            router_b=rand(EXPERTS), experts=make_moe_weights(seed=index), kv_cache=kv,
            window=WINDOW if index % 2 == 0 else 0,
        ))
    embed = rand(VOCAB, HIDDEN, std=1.0)
    lm_head = rand(VOCAB, HIDDEN)
    final_norm = torch.ones(HIDDEN, device="cuda", dtype=torch.bfloat16)
    return layers, embed, lm_head, final_norm


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 64])
    parser.add_argument("--context", type=int, default=1024, help="tokens already in each sequence's cache")
    parser.add_argument("--steps", type=int, default=100)
    args = parser.parse_args()
    torch.manual_seed(0)
    max_batch = max(args.batch)
    blocks_per_seq = args.context // BLOCK_SIZE + 2
    layers, embed, lm_head, final_norm = build(max_batch * blocks_per_seq + 1)
    inv_freq = 1.0 / ROPE_THETA ** (torch.arange(0, HEAD_DIM, 2, device="cuda").float() / HEAD_DIM)
    rope_angles = torch.arange(args.context + 64, device="cuda").float()[:, None] * inv_freq[None, :]   # [P, hd/2]

    def make_inputs(batch: int) -> dict[str, torch.Tensor]:
        tables = torch.arange(batch * blocks_per_seq, device="cuda", dtype=torch.int32).view(batch, blocks_per_seq)
        positions = torch.full((batch,), args.context, device="cuda", dtype=torch.int64)
        slots = tables[:, args.context // BLOCK_SIZE].long() * BLOCK_SIZE + args.context % BLOCK_SIZE
        return {"token_ids": torch.randint(0, VOCAB, (batch,), device="cuda"), "positions": positions,
                "slot_mapping": slots, "seq_lens": (positions + 1).to(torch.int32), "block_tables": tables}

    def step(inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        batch = inputs["token_ids"].shape[0]
        x = embed[inputs["token_ids"]]                                           # [B, D]
        angles = rope_angles[inputs["positions"]][:, None, :]                   # [B, 1, hd/2]
        cos, sin = angles.cos(), angles.sin()
        for layer in layers:
            h = rms_norm(x, layer.norm1)
            qkv = F.linear(h, layer.qkv_w, layer.qkv_b)                          # [B, QKV]
            q = qkv[:, : HEADS * HEAD_DIM].view(batch, HEADS, HEAD_DIM)
            k = qkv[:, HEADS * HEAD_DIM: (HEADS + KV_HEADS) * HEAD_DIM].view(batch, KV_HEADS, HEAD_DIM)
            v = qkv[:, (HEADS + KV_HEADS) * HEAD_DIM:].view(batch, KV_HEADS, HEAD_DIM)
            q, k = rope(q, cos, sin), rope(k, cos, sin)
            write_kv_cache(layer.kv_cache, k, v, inputs["slot_mapping"])
            attn = paged_decode_attention(q, layer.kv_cache, inputs["seq_lens"], inputs["block_tables"],
                                          layer.sinks, layer.window, HEAD_DIM ** -0.5)   # [B, Hq, hd]
            x = x + F.linear(attn.reshape(batch, HEADS * HEAD_DIM), layer.o_w, layer.o_b)
            h = rms_norm(x, layer.norm2)
            ids, weights = route_topk(F.linear(h, layer.router_w, layer.router_b), TOP_K)
            x = x + mxfp4_moe(h, ids, weights, layer.experts)
        logits = F.linear(rms_norm(x, final_norm), lm_head)                     # [B, V]
        return logits.argmax(dim=-1)

    graphs = CudaGraphSteps(step, make_inputs, args.batch)
    dense_bytes = LAYERS * (QKV * HIDDEN + HIDDEN * HEADS * HEAD_DIM) * 2 + VOCAB * HIDDEN * 2
    expert_bytes = (3 * HIDDEN * HIDDEN) * 17 // 32
    rows = []
    for batch in args.batch:
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        for _ in range(5):
            graphs.replay(batch)
        times = []
        for _ in range(args.steps):
            start.record()
            graphs.replay(batch)
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        ms = sorted(times)[len(times) // 2]
        # experts a random router picks for this batch (the same distribution as the step's routing)
        x_probe = torch.randn(batch, EXPERTS, device="cuda")
        active = torch.unique(torch.topk(x_probe, TOP_K, dim=-1).indices).numel()
        kv_bytes = batch * (LAYERS // 2) * (args.context + 1 + min(args.context + 1, WINDOW)) * KV_HEADS * HEAD_DIM * 4
        step_bytes = dense_bytes + LAYERS * active * expert_bytes + kv_bytes
        rows.append({"batch": batch, "context": args.context, "step_ms": ms, "tok_s": batch / ms * 1e3,
                     "bytes_per_step": step_bytes, "GB_s": step_bytes / ms / 1e6, "graph_batch": graphs.padded_size(batch),
                     "next_tokens": graphs.replay(batch)[:4].tolist()})
    result = {"device": torch.cuda.get_device_name(0), "rows": rows,
              "memory_GiB": torch.cuda.max_memory_allocated() / 2**30}
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
