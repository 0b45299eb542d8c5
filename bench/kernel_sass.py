"""Compile the MoE kernels for sm_90 without a GPU and count the instructions of their main loop.

    python bench/kernel_sass.py

Triton's wheel bundles ptxas and nvdisasm, so a machine without a GPU can build the Hopper binary
and read its SASS. For each kernel and tile this prints the innermost loop that dequantizes (the
one holding HMUL2/HFMA2), its size, instructions per weight value (all threads), and the most
frequent opcodes: the MoE at decode is bound by instruction issue, so fewer is faster; and the width
of its loads, in checkpoint order and in 16-row tiles (kernels/expert_layout.py). Integer
arguments that are multiples of 16 at run time are marked so (as Triton's launcher specializes
them); without that mark loads stop vectorizing and the counts mislead.
"""

from __future__ import annotations

import collections
import re
import subprocess
import sys
from pathlib import Path

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tkr_embed.backends.torch.kernels import mxfp4_gemv, mxfp4_moe_decode, mxfp4_moe_grouped, mxfp4_moe_prefill  # noqa: E402

NVDISASM = Path(triton.__file__).parent / "backends/nvidia/bin/nvdisasm"
NOT_MULTIPLE_OF_16 = {"stride_sn", "num_pairs"}   # scale rows are K/32 = 90 bytes; pair counts vary


def compile_sm90(fn, signature: dict[str, str], constants: dict, **options):
    attrs = {(fn.arg_names.index(name),): [["tt.divisibility", 16]] for name, kind in signature.items()
             if name not in NOT_MULTIPLE_OF_16 and (kind.startswith("*") or kind == "i32")}
    source = ASTSource(fn=fn, signature={**signature, **{k: "constexpr" for k in constants}}, constexprs=constants,
                       attrs=attrs)
    return triton.compile(source, target=GPUTarget("cuda", 90, 32), options=options)


def dequant_loop(cubin: bytes) -> list[str]:
    """The smallest loop body (backward branch) that loads and does half-precision arithmetic
    (bf16x2 products or fp16 -> fp32 conversions)."""
    path = Path("/tmp/kernel_sass.cubin")
    path.write_bytes(cubin)
    sass = subprocess.run([str(NVDISASM), "-c", str(path)], capture_output=True, text=True, check=True).stdout
    lines = sass.splitlines()
    labels = {m.group(1): i for i, line in enumerate(lines) if (m := re.match(r"^(\.L_x_\d+):", line))}
    best: list[str] = []
    for i, line in enumerate(lines):
        match = re.search(r"BRA `\((\.L_x_\d+)\)", line)
        if match and labels.get(match.group(1), i) < i:
            body = [l for l in lines[labels[match.group(1)]:i + 1] if re.match(r"^\s+/\*[0-9a-f]+\*/", l)]
            arithmetic = any(op in l for l in body for op in ("HMUL2", "HFMA2", "HADD2.F32"))
            if arithmetic and any("LDG" in l for l in body) and (not best or len(body) < len(best)):
                best = body
    return best


def report(name: str, kernel, values_per_iteration: int, warps: int) -> None:
    body = dequant_loop(kernel.asm["cubin"])
    ops, loads = collections.Counter(), collections.Counter()
    for line in body:
        words = line.split()
        op = words[2] if words[1].startswith("@") else words[1]
        ops[op.split(".")[0].rstrip(";")] += 1
        if op.startswith("LDG"):
            loads[op.rstrip(";")] += 1
    per_value = len(body) * warps * 32 / values_per_iteration
    print(f"{name}: loop {len(body)} instructions, {per_value:.2f} per weight; {ops.most_common(8)}; loads {dict(loads)}")


def all_loads(kernel) -> dict[str, int]:
    """Every global load of the kernel by width (for kernels without a dequantizing loop)."""
    path = Path("/tmp/kernel_sass.cubin")
    path.write_bytes(kernel.asm["cubin"])
    sass = subprocess.run([str(NVDISASM), "-c", str(path)], capture_output=True, text=True, check=True).stdout
    return dict(collections.Counter(m.group(1) for m in re.finditer(r"(LDG[.A-Z0-9_]*)", sass)))


def main() -> int:
    gemv = dict(act_ptr="*bf16", ids_ptr="*i32", route_w_ptr="*fp32", w_ptr="*i32", s_ptr="*u8", bias_ptr="*bf16",
                out_ptr="*bf16", N="i32", stride_act="i32", stride_we="i32", stride_wn="i32", stride_se="i32",
                stride_sn="i32", stride_be="i32", stride_out="i32")
    decode = dict(a_ptr="*bf16", ids_ptr="*i32", w_ptr="*u8", s_ptr="*u8", bias_ptr="*bf16", route_w_ptr="*fp32",
                  out_ptr="*bf16", num_pairs="i32", N_W="i32", N_OUT="i32", stride_a="i32", stride_we="i32",
                  stride_wn="i32", stride_se="i32", stride_sn="i32", stride_be="i32", stride_out="i32")
    grouped = {**decode, "sorted_pair_ids_ptr": "*i32", "block_expert_ptr": "*i32"}
    del grouped["ids_ptr"]
    grouped = {name: grouped[name] for name in mxfp4_moe_grouped._moe_grouped_kernel.arg_names if name in grouped}
    for tiled in (False, True):
        for f16, block_n, block_g, warps, splits in ((True, 16, 16, 2, 1), (True, 16, 8, 2, 1), (False, 16, 8, 2, 1)):
            kernel = compile_sm90(mxfp4_gemv._gemv_down_kernel, gemv, dict(G=90, BLOCK_N=block_n, BLOCK_G=block_g, ASM=True,
                                  F16=f16, SPLITS=splits, TILED=tiled, PDL=True), num_warps=warps)
            report(f"tiled={tiled} gemv down f16_products={f16} BLOCK_N={block_n} BLOCK_G={block_g} warps={warps}",
                   kernel, block_n * block_g * 32, warps)
        for w_rows, block_k, swap in ((64, 128, False), (128, 128, True)):
            constants = dict(K=2880, TOP_K=4, A_ROWS_ARE_TOKENS=False, FUSE_SWIGLU=False, APPLY_ROUTE_WEIGHT=True,
                             P_PAD=256, BLOCK_M=16, BLOCK_N=w_rows, BLOCK_K=block_k, W_ROWS=w_rows, SWAP_AB=swap,
                             DOT_SCALED=False, ASM=True, TILED=tiled, PDL=True)
            kernel = compile_sm90(mxfp4_moe_decode._moe_decode_kernel, decode, constants, num_warps=4, num_stages=3)
            report(f"tiled={tiled} decode down W_ROWS={w_rows} BLOCK_K={block_k} swap_ab={swap}", kernel, w_rows * block_k, 4)
        constants = dict(K=2880, TOP_K=4, A_ROWS_ARE_TOKENS=False, FUSE_SWIGLU=False, APPLY_ROUTE_WEIGHT=True,
                         BLOCK_M=64, BLOCK_N=64, BLOCK_K=64, W_ROWS=64, SWAP_AB=False, DOT_SCALED=False, ASM=True,
                         TILED=tiled, PDL=True)
        kernel = compile_sm90(mxfp4_moe_grouped._moe_grouped_kernel, grouped, constants, num_warps=4, num_stages=3)
        report(f"tiled={tiled} grouped down BLOCK_M=64 W_ROWS=64 BLOCK_K=64", kernel, 64 * 64, 4)
        kernel = compile_sm90(mxfp4_moe_prefill._dequant_kernel, dict(blocks_ptr="*u8", scales_ptr="*u8", out_ptr="*bf16",
                              num_groups="i32"), dict(G=90, BLOCK=64, ASM=True, TILED=tiled), num_warps=4)
        print(f"tiled={tiled} prefill dequantization: loads {all_loads(kernel)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
