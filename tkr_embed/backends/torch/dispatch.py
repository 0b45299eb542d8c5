"""Which implementation the model's swap points use: Triton kernels on CUDA, plain PyTorch elsewhere.

`paged_attention` (attention.py) and `Experts.experts_forward` (moe.py) ask `use_kernels(tensor)`:
true for a CUDA tensor unless a `reference_ops()` block is active (tests compare the two paths).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

_state = {"reference": False}


def use_kernels(tensor: torch.Tensor) -> bool:
    """True when `tensor` lives on CUDA and the kernels are not switched off."""
    return tensor.is_cuda and not _state["reference"]


@contextmanager
def reference_ops() -> Iterator[None]:
    """Run the plain-PyTorch reference ops (also on CUDA) inside this block."""
    previous = _state["reference"]
    _state["reference"] = True
    try:
        yield
    finally:
        _state["reference"] = previous
