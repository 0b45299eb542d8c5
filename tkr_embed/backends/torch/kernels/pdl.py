"""Programmatic dependent launch (Hopper and newer) for the Triton kernels of a decode step.

A batch-1 decode step is ~285 short kernels; between two of them the card idles while the next one is
launched and its programs start. A kernel launched with `launch_pdl=True` may start while the kernel
before it still runs: its programs do whatever needs nothing from that kernel (address arithmetic,
loading constant weights), then `griddepcontrol.wait` holds them until the previous kernel has
finished and its writes are visible. Right after that wait each program lets the next kernel start
(`griddepcontrol.launch_dependents`), so at most one kernel runs ahead. CUDA graphs keep these
programmatic edges.

The contract every kernel that takes `PDL` follows: before `wait_for_previous_kernel(PDL)` it reads
nothing another kernel writes and writes nothing at all, and every program reaches the wait (no early
return before it). A kernel that waits thus also waits, transitively, for all kernels before it.
Kernels without the launch attribute (cuBLAS, torch ops) keep ordinary stream order.
"""

from __future__ import annotations

import functools
import os

import torch
import triton
import triton.language as tl

PDL_ON_CUDA = True  # module switch (an A/B run can turn it off)


@functools.cache
def _capability_major(device_index: int) -> int:
    return torch.cuda.get_device_capability(device_index)[0]


def interpreting() -> bool:
    """Triton's CPU interpreter runs the kernels (TRITON_INTERPRET)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def use_pdl(tensor: torch.Tensor) -> bool:
    """Launch with programmatic dependent launch: CUDA tensors on sm_90+, outside Triton's interpreter."""
    if not (PDL_ON_CUDA and tensor.is_cuda) or interpreting():
        return False
    return (
        _capability_major(tensor.device.index if tensor.device.index is not None else torch.cuda.current_device()) >= 9
    )


def pdl_launch(tensor: torch.Tensor) -> dict:
    """The kernel arguments for a launch: PDL (the kernel's constexpr) and Triton's launch_pdl."""
    on = use_pdl(tensor)
    return {"PDL": on, "launch_pdl": on} if on else {"PDL": False}


@triton.jit
def wait_for_previous_kernel(PDL: tl.constexpr):
    """Wait until the previous kernel has finished (its writes visible), then let the next one start."""
    if PDL:
        tl.extra.cuda.gdc_wait()
        tl.extra.cuda.gdc_launch_dependents()
