"""Host values onto the device without making the host wait for it."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch


def on_device(values: Sequence | np.ndarray, dtype: torch.dtype, device: torch.device | str) -> torch.Tensor:
    """Host values (a list, nested lists of one length, or an array) as a tensor on `device`. On CUDA they go through
    page-locked memory and an asynchronous copy: a plain copy from pageable memory waits for everything queued
    before it (the step's forward), so the host could not queue the rest of the step, nor prepare the next one,
    while the device computes. The caching host allocator keeps the page-locked block until the copy is done."""
    device = torch.device(device)
    host = torch.from_numpy(values).to(dtype) if isinstance(values, np.ndarray) else torch.tensor(values, dtype=dtype)
    if device.type != "cuda":
        return host.to(device)
    return host.pin_memory().to(device, non_blocking=True)
