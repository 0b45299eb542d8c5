"""The register-operand MMA MoE kernels built for Hopper without a GPU (Triton bundles ptxas and nvdisasm).

Their numbers are checked on the GPU (tests/gpu/test_gpu_kernels.py). Here: every change of layout
between the weight loads and the MMAs moves no data (the kernel asserts it while compiling), the main
loop multiplies on the tensor cores straight from registers (no shared memory, no barrier), and the
scale-byte and norm-weight ranges the model checks keep every weight and input exact / finite in fp16.
"""

from __future__ import annotations

import collections
import re
import subprocess
from pathlib import Path

import pytest

triton = pytest.importorskip("triton")

from tkr_embed.backends.torch.kernels import mxfp4_moe_mma as mma  # noqa: E402

SIGNATURE = dict(
    a_ptr="*fp16",
    sorted_pair_ids_ptr="*i32",
    block_expert_ptr="*i32",
    w_ptr="*i32",
    s_ptr="*u8",
    bias_ptr="*bf16",
    route_w_ptr="*fp32",
    out_ptr="*fp16",
    num_pairs="i32",
    stride_a="i32",
    stride_we="i32",
    stride_wn="i32",
    stride_se="i32",
    stride_sn="i32",
    stride_be="i32",
    stride_out="i32",
)


def _sass_loop_ops(rows: int, swiglu: bool, tiled: bool = False) -> collections.Counter:
    from triton.backends.compiler import GPUTarget
    from triton.experimental.gluon._runtime import GluonASTSource

    cfg = mma.MmaTileConfig()
    fn = mma._moe_mma_kernel
    constants = dict(
        K=2880,
        TOP_K=4,
        A_ROWS_ARE_TOKENS=swiglu,
        FUSE_SWIGLU=swiglu,
        APPLY_ROUTE_WEIGHT=not swiglu,
        ROWS=rows,
        BT=cfg.block_t,
        L=mma._layouts(rows, cfg.num_warps, cfg.block_t),
        PTX=mma._WORD_TO_F16_PTX,
        SWIGLU_LIMIT=7.0,
        SWIGLU_ALPHA=1.702,
        TILED=tiled,
        PDL=True,
    )
    attrs = {
        (fn.arg_names.index(name),): [["tt.divisibility", 16]]
        for name, kind in SIGNATURE.items()
        if name not in ("stride_sn", "num_pairs")
    }
    source = GluonASTSource(
        fn=fn, signature={**SIGNATURE, **{k: "constexpr" for k in constants}}, constexprs=constants, attrs=attrs
    )
    kernel = triton.compile(source, target=GPUTarget("cuda", 90, 32), options=dict(num_warps=cfg.num_warps))
    cubin = Path("/tmp") / f"mma_moe_{rows}_{swiglu}_{tiled}.cubin"
    cubin.write_bytes(kernel.asm["cubin"])
    nvdisasm = Path(triton.__file__).parent / "backends/nvidia/bin/nvdisasm"
    lines = subprocess.run(
        [str(nvdisasm), "-c", str(cubin)], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    labels = {m.group(1): i for i, line in enumerate(lines) if (m := re.match(r"^(\.L_x_\d+):", line))}
    loops = []
    for i, line in enumerate(lines):
        match = re.search(r"BRA `\((\.L_x_\d+)\)", line)
        if match and labels.get(match.group(1), i) < i:
            loops.append([l for l in lines[labels[match.group(1)] : i + 1] if re.match(r"^\s+/\*[0-9a-f]+\*/", l)])
    ops = collections.Counter()
    for line in max(loops, key=len):
        words = line.split()
        ops[(words[2] if words[1].startswith("@") else words[1]).split(".")[0].rstrip(";")] += 1
    return ops


@pytest.mark.parametrize("tiled", [False, True])
@pytest.mark.parametrize("rows, swiglu", [(128, True), (64, False)])
def test_main_loop_multiplies_from_registers(rows, swiglu, tiled):
    ops = _sass_loop_ops(rows, swiglu, tiled)
    per_warp_rows = rows // mma.MmaTileConfig().num_warps
    # three 64-code chunks a step: four k16 MMAs each per 16 rows and 8 tokens of a block of 16
    assert ops["HMMA"] == 3 * 4 * (per_warp_rows // 16) * 2, ops
    assert ops["LDG"] > 0 and ops["F2FP"] > 0 and ops["HMUL2"] > 0, ops
    assert not {"LDS", "STS", "LDSM", "BAR"} & set(ops), ops


def test_scale_byte_range_keeps_every_weight_exact_in_fp16():
    torch = pytest.importorskip("torch")
    codes = torch.tensor([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0], dtype=torch.float64)
    low, high = mma.SCALE_BYTE_RANGE
    for s in range(low, high + 1):
        multiplier = torch.tensor(2.0 ** (s - 121 + mma.SCALE_BIAS), dtype=torch.float64)
        assert multiplier.to(torch.float16).double() == multiplier and multiplier >= 2.0**-14  # a normal fp16
        weights = codes * 2.0 ** (s - 127 + mma.SCALE_BIAS)
        assert torch.equal(weights.to(torch.float16).double(), weights), s
    assert not torch.isfinite(torch.tensor(6.0 * 2.0 ** (high + 5 - 127 + mma.SCALE_BIAS)).to(torch.float16))
    assert (
        mma.scale_bytes_fit(115, 125)
        and not mma.scale_bytes_fit(low - 1, 125)
        and not mma.scale_bytes_fit(115, high + 1)
    )


def test_normed_inputs_fit_only_while_every_rms_normed_value_is_a_finite_fp16():
    torch = pytest.importorskip("torch")
    hidden = 2880
    worst = torch.zeros(hidden)
    worst[0] = 1.0  # all energy in one channel: x / rms(x) = sqrt(hidden)
    for weight in (1.0, 1000.0, 1200.0, 1300.0):
        normed = worst / worst.pow(2).mean().sqrt() * weight
        assert mma.normed_inputs_fit(weight, hidden) == bool(torch.isfinite(normed.to(torch.float16)).all()), weight
