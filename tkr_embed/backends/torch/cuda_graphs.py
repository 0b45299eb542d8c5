"""Decode steps captured as CUDA graphs, one per batch size; replay the smallest that fits.

The step function reads only its static input buffers and returns a tensor whose rows follow the
batch; every graph shares one memory pool, captured largest first so smaller ones reuse its memory.
Inputs for a smaller batch are padded by leaving the tail rows of the static buffers as they were
(the step must tolerate those rows: e.g. padding slots pointing at a scratch KV block).
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

StepFn = Callable[[dict[str, torch.Tensor]], torch.Tensor]


@dataclass
class _CapturedStep:
    graph: torch.cuda.CUDAGraph
    inputs: dict[str, torch.Tensor]  # static buffers, first dim = batch size
    output: torch.Tensor  # static result, first dim = batch size


class CudaGraphSteps:
    """Holds one captured graph of `step` per batch size."""

    def __init__(
        self,
        step: StepFn,
        make_inputs: Callable[[int], dict[str, torch.Tensor]],
        batch_sizes: Sequence[int],
        warmup_runs: int = 2,
    ) -> None:
        if not batch_sizes:
            raise ValueError("batch_sizes must not be empty")
        self.batch_sizes = sorted(set(batch_sizes))
        self._steps: dict[int, _CapturedStep] = {}
        pool = None
        stream = torch.cuda.Stream()
        for batch_size in reversed(self.batch_sizes):
            inputs = make_inputs(batch_size)
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):
                for _ in range(warmup_runs):  # compile kernels and settle allocations
                    step(inputs)
            torch.cuda.current_stream().wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=pool):
                output = step(inputs)
            pool = graph.pool()
            self._steps[batch_size] = _CapturedStep(graph, inputs, output)
        torch.cuda.synchronize()

    def padded_size(self, batch_size: int) -> int:
        """The smallest captured batch size >= batch_size."""
        index = bisect.bisect_left(self.batch_sizes, batch_size)
        if index == len(self.batch_sizes):
            raise ValueError(f"batch of {batch_size} exceeds the largest captured size {self.batch_sizes[-1]}")
        return self.batch_sizes[index]

    def static_inputs(self, batch_size: int) -> dict[str, torch.Tensor]:
        """The buffers of the graph that serves `batch_size` (fill rows [:batch_size] in place)."""
        return self._steps[self.padded_size(batch_size)].inputs

    def replay(self, batch_size: int, **inputs: torch.Tensor) -> torch.Tensor:
        """Copy `inputs` into the first rows of the static buffers, replay, return the first rows."""
        captured = self._steps[self.padded_size(batch_size)]
        for name, value in inputs.items():
            captured.inputs[name][: value.shape[0]].copy_(value, non_blocking=True)
        captured.graph.replay()
        return captured.output[:batch_size]
