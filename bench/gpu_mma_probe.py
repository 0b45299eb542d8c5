"""Where the MoE MMA kernel's time goes, 20b shape: variants of `mxfp4_moe_mma` made by editing its source.

    python bench/gpu_mma_probe.py [--tokens 64]

Each probe removes or changes one thing (the scale loads, the activation loads, L1 caching of the weight
stream, L2 prefetches) and is timed like bench/gpu_moe_mma.py; probes that change the arithmetic are not
checked. The experts are in 16-row tiles as the model keeps them (--untiled: checkpoint order).
The variant modules are written next to the kernel as _probe_*.py and removed afterwards.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from gpu_kernels import EXPERT_BYTES, ROTATIONS, graph_time_ms
from with_patch import source_variant

from tkr_embed.backends.torch.kernels import expert_layout, mxfp4_moe_mma
from tkr_embed.backends.torch.kernels.mxfp4_reference import moe_reference
from tkr_embed.backends.torch.kernels.random_cases import make_moe_case, make_moe_weights, relative_error

NO_X = [("x1 = gl.load(x_ptrs + (c + 1) * 64)", "x1 = x0"), ("x2 = gl.load(x_ptrs + (c + 2) * 64)", "x2 = x0"),
        ("x0 = gl.load(x_ptrs + gl.minimum(c + 3, NC - 1) * 64)", "x0 = x0")]
# the edits target the tiled branch of the kernel (--untiled runs take no probes)
NO_S = [("s = gl.load(s_ptrs + c * 32).to(gl.int32)", "s = gl.sum(words, axis=2) * 0 + 120")]
def prefetch_l2(ahead: int) -> list[tuple[str, str]]:
    """Each step also asks L2 for each row's line `ahead` chunks on (no registers held while in flight)."""
    return [("            w3, s3 = _load_weights(w_ptrs, s_ptrs, c + 3, NC, TILED)\n",
             "            w3, s3 = _load_weights(w_ptrs, s_ptrs, c + 3, NC, TILED)\n"
             "            gl.inline_asm_elementwise('prefetch.global.L2 [$1];', '=r,l', "
             f"[w_rows + gl.minimum(c + {ahead}, NC - 1) * 128], dtype=gl.int32, is_pure=False, pack=1)\n")]


def max_registers(count: int) -> list[tuple[str, str]]:
    return [("num_warps=cfg.num_warps, launch_pdl=pdl,", f"num_warps=cfg.num_warps, launch_pdl=pdl, maxnreg={count},")]


NO_X_PREFETCH = [("            x1 = gl.load(x_ptrs + (c + 1) * 64)\n", ""), ("            x2 = gl.load(x_ptrs + (c + 2) * 64)\n", ""),
                 ("            x0 = gl.load(x_ptrs + gl.minimum(c + 3, NC - 1) * 64)\n", ""),
                 ("        x0 = gl.load(x_ptrs)\n", ""),
                 ("acc = _chunk_mma(acc, w0, s0, x0,", "acc = _chunk_mma(acc, w0, s0, gl.load(x_ptrs + c * 64),"),
                 ("acc = _chunk_mma(acc, w1, s1, x1,", "acc = _chunk_mma(acc, w1, s1, gl.load(x_ptrs + (c + 1) * 64),"),
                 ("acc = _chunk_mma(acc, w2, s2, x2,", "acc = _chunk_mma(acc, w2, s2, gl.load(x_ptrs + (c + 2) * 64),")]


def bulk_prefetch(ahead: int) -> list[tuple[str, str]]:
    """Tiled experts: each step one lane per warp asks L2 for the 3 tile columns (1,536 contiguous bytes) of each
    of its 16-row tiles `ahead` chunks on (cp.async.bulk.prefetch: no registers, no shared memory)."""
    return [("        s_ptrs = s_rows[:, None] + (t_s // 2)[None, :]\n",
             "        s_ptrs = s_rows[:, None] + (t_s // 2)[None, :]\n"
             "        tile_rows = w_rows - (row % 16) * 8\n"),
            ("            w3, s3 = _load_weights(w_ptrs, s_ptrs, c + 3, NC, TILED)\n",
             "            w3, s3 = _load_weights(w_ptrs, s_ptrs, c + 3, NC, TILED)\n"
             "            gl.inline_asm_elementwise('{ .reg .pred p; elect.sync _|p, 0xffffffff; "
             "@p cp.async.bulk.prefetch.L2.global [$1], 1536; }', '=r,l', "
             f"[tile_rows + gl.minimum(c + {ahead}, NC - 3) * 128], dtype=gl.int32, is_pure=False, pack=1)\n")]


def down_split(splits: int) -> list[tuple[str, str]]:
    """The down projection's K in `splits` shares, a program each (grid axis 2); every share writes the whole result
    (timing only: shorter programs, so a shorter tail at the end of the launch)."""
    return [("CHUNKS_PER_STEP = 3 ", f"KSPLIT_DOWN = {splits}\nCHUNKS_PER_STEP = 3 "),
            ("    PDL: gl.constexpr,\n):", "    PDL: gl.constexpr, KSPLIT: gl.constexpr,\n):"),
            ("    pid_n = gl.program_id(1)\n", "    pid_n = gl.program_id(1)\n    k0 = gl.program_id(2) * (K // 64 // KSPLIT)\n"),
            ("w0, s0 = _load_weights(w_ptrs, s_ptrs, 0, NC, TILED)", "w0, s0 = _load_weights(w_ptrs, s_ptrs, k0, NC, TILED)"),
            ("w1, s1 = _load_weights(w_ptrs, s_ptrs, 1, NC, TILED)", "w1, s1 = _load_weights(w_ptrs, s_ptrs, k0 + 1, NC, TILED)"),
            ("w2, s2 = _load_weights(w_ptrs, s_ptrs, 2, NC, TILED)", "w2, s2 = _load_weights(w_ptrs, s_ptrs, k0 + 2, NC, TILED)"),
            ("        x0 = gl.load(x_ptrs)\n", "        x0 = gl.load(x_ptrs + k0 * 64)\n"),
            ("for c in range(0, NC, 3):", "for c in range(k0, k0 + NC // KSPLIT, 3):"),
            ("    grid = (blocks.block_expert.numel(), n_rows // rows)\n",
             "    ksplit = 1 if swiglu else KSPLIT_DOWN\n    grid = (blocks.block_expert.numel(), n_rows // rows, ksplit)\n"),
            ("PDL=pdl, num_warps=cfg.num_warps,", "PDL=pdl, KSPLIT=ksplit, num_warps=cfg.num_warps,")]


PROBES = {
    "down K in 3": down_split(3),
    "down K in 5": down_split(5),
    "bulk L2 prefetch 6 chunks ahead": bulk_prefetch(6),
    "bulk L2 prefetch 9 chunks ahead": bulk_prefetch(9),
    "bulk L2 prefetch 15 chunks ahead": bulk_prefetch(15),
    "at most 96 registers": max_registers(96),
    "at most 104 registers": max_registers(104),
    "at most 112 registers": max_registers(112),
    "activations loaded at use": NO_X_PREFETCH,
    "activations at use, at most 96 registers": NO_X_PREFETCH + max_registers(96),
    "L2 prefetch 9 chunks ahead": prefetch_l2(9),
    "L2 prefetch 15 chunks ahead": prefetch_l2(15),
    "L2 prefetch 24 chunks ahead": prefetch_l2(24),
    "activations loaded once": NO_X,
    "no scale loads": NO_S,
    "only weight loads": NO_X + NO_S,
    "as is": [],
    "weights .cg": [("words = gl.load(w_ptrs + c * 128)", 'words = gl.load(w_ptrs + c * 128, cache_modifier=".cg")')],
    "weights evict_first": [("words = gl.load(w_ptrs + c * 128)",
                             'words = gl.load(w_ptrs + c * 128, eviction_policy="evict_first")')],
    "no scale stream": [("s = gl.load(s_ptrs + c * 32)", "s = gl.load(s_ptrs)")],
    "no activation stream": [("x1 = gl.load(x_ptrs + (c + 1) * 64)", "x1 = gl.load(x_ptrs)"),
                             ("x2 = gl.load(x_ptrs + (c + 2) * 64)", "x2 = gl.load(x_ptrs)"),
                             ("x0 = gl.load(x_ptrs + gl.minimum(c + 3, NC - 1) * 64)", "x0 = gl.load(x_ptrs)")],
    "neither": [("s = gl.load(s_ptrs + c * 32)", "s = gl.load(s_ptrs)"),
                ("x1 = gl.load(x_ptrs + (c + 1) * 64)", "x1 = gl.load(x_ptrs)"),
                ("x2 = gl.load(x_ptrs + (c + 2) * 64)", "x2 = gl.load(x_ptrs)"),
                ("x0 = gl.load(x_ptrs + gl.minimum(c + 3, NC - 1) * 64)", "x0 = gl.load(x_ptrs)")],
}


def variant(name: str, edits: list[tuple[str, str]], source: str | None = None):
    return source_variant(mxfp4_moe_mma, name, edits, source)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tokens", type=int, nargs="+", default=[64])
    parser.add_argument("--probes", nargs="+", default=list(PROBES), help="which edits of the source to time")
    parser.add_argument("--untiled", action="store_true", help="experts in checkpoint order (default: 16-row tiles)")
    parser.add_argument("--configs", nargs="+", metavar="BT,ROWS_GATE_UP,ROWS_DOWN,WARPS",
                        default=["16,128,64,4", "16,64,64,2", "8,128,64,4"], help="tile configurations to time")
    parser.add_argument("--source", nargs="*", default=[], metavar="NAME=FILE",
                        help="other versions of the module to time (e.g. git show HEAD:... > FILE)")
    args = parser.parse_args()
    if args.untiled and set(args.probes) - {"as is"}:
        parser.error("the probes edit the kernel's tiled branch: with --untiled only 'as is' applies")
    weight_sets = [make_moe_weights(seed=i) for i in range(ROTATIONS)]
    tiled = not args.untiled
    kernel_weights = [expert_layout.tiled_weights(w) if tiled else w for w in weight_sets]
    modules = {name: variant(name, PROBES[name]) for name in args.probes}
    for spec in args.source:
        name, _, file = spec.partition("=")
        modules[name] = variant(name, [], Path(file).read_text())
    configs = [mxfp4_moe_mma.MmaTileConfig(*map(int, spec.split(","))) for spec in args.configs]
    rows = []
    for tokens in args.tokens:
        cases = [make_moe_case(tokens, seed=i, weights=weight_sets[i]) for i in range(ROTATIONS)]
        ref = moe_reference(cases[0].hidden, cases[0].topk_ids, cases[0].topk_weights, *cases[0].weights).float()
        moved = sum(torch.unique(c.topk_ids).numel() for c in cases) / ROTATIONS * EXPERT_BYTES
        for name, module in modules.items():
            for cfg in configs:
                cfg = module.MmaTileConfig(**cfg.__dict__)
                def fn(i, module=module, cfg=cfg):
                    c = cases[i]
                    return module.mxfp4_moe_mma_partials(c.hidden, c.topk_ids, c.topk_weights, kernel_weights[i],
                                                         config=cfg, tiled=tiled).sum(1)
                error = relative_error(fn(0).float(), ref)
                ms = graph_time_ms(fn, ROTATIONS)
                row = {"tokens": tokens, "probe": name, "config": cfg.__dict__, "ms": ms, "GB_s": moved / ms / 1e6,
                       "rel_error": error}
                print(tokens, name, cfg.__dict__, round(ms, 4), round(row["GB_s"]), round(error, 5), flush=True)
                rows.append(row)
    print(json.dumps({"card": torch.cuda.get_device_name(0), "rows": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
