"""Per-layer error of the CUDA paths against the CPU float32 reference on the demo checkpoint.

    python bench/gpu_diag_layers.py [--checkpoint DIR] [--steps 5]

Three sequences of 40 tokens are prefilled, then `steps` greedy decode steps run (the CPU's argmax
fed to every path). Paths, each with its own KV blocks: CPU float32 (plain torch, the reference),
CUDA bf16 plain torch (`reference_ops()`), CUDA bf16 fused kernels (eager) and the captured decode
graph (logits only). For every step it prints the relative L2 error of each layer's residual stream
and of the logits against the reference, so a systematic error shows up at the layer that makes it.
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
from contextlib import nullcontext

import torch

BLOCK = 16


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double().cpu(), b.double().cpu()
    return round(float((a - b).norm() / b.norm()), 5)


class LayerTap:
    """Records the residual stream after every decoder layer, for the plain and the fused forward."""

    def __init__(self, model) -> None:
        from tkr_embed.backends.torch.kernels import fused_ops

        self.states: list[torch.Tensor] = []
        self.enabled = False
        for layer in model.model.layers:
            layer.register_forward_hook(self._hook)
        original = fused_ops.add_rms_norm

        def tapped(x, residual, *args, **kwargs):
            out, new_residual = original(x, residual, *args, **kwargs)
            if self.enabled and x.dim() == 3:      # the MoE's per-pair results: the end of a layer
                self.states.append(new_residual.detach().float().cpu())
            return out, new_residual

        fused_ops.add_rms_norm = tapped

    def _hook(self, _module, _inputs, output) -> None:
        if self.enabled:
            self.states.append(output.detach().float().cpu())

    def run(self, fn):
        self.states, self.enabled = [], True
        try:
            return fn(), self.states
        finally:
            self.enabled = False


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args()

    from tkr_embed.backends.torch.attention import build_attention_metadata
    from tkr_embed.backends.torch.dispatch import reference_ops
    from tkr_embed.backends.torch.runner import TorchModelRunner
    from tkr_embed.engine.runner import BatchEntry, ScheduledBatch
    from tkr_embed.engine.sampling_params import SamplingParams
    from tkr_embed.models.gpt_oss.demo import write_demo_checkpoint

    checkpoint = args.checkpoint or write_demo_checkpoint(tempfile.mkdtemp(), seed=0)
    cpu = TorchModelRunner(checkpoint, device="cpu", dtype="float32", num_kv_blocks=256)
    gpu = TorchModelRunner(checkpoint, device="cuda", num_kv_blocks=256, cuda_graph_batch_sizes=(1, 2, 4, 8))
    cpu_tap, gpu_tap = LayerTap(cpu.model), LayerTap(gpu.model)
    rng = random.Random(1)
    prompts = [[rng.randrange(200_000) for _ in range(40)] for _ in range(3)]
    per_seq = 8
    paths = {"cpu": (cpu, 0), "plain": (gpu, 0), "fused": (gpu, 64), "graph": (gpu, 128)}
    lengths = {name: [0, 0, 0] for name in paths}

    def forward(name: str, chunks: list[list[int]]):
        runner, offset = paths[name]
        tables = [list(range(offset + i * per_seq, offset + (i + 1) * per_seq)) for i in range(3)]
        starts = list(lengths[name])
        for i, chunk in enumerate(chunks):
            lengths[name][i] += len(chunk)
        if name == "graph" and all(len(c) == 1 for c in chunks):
            entries = [BatchEntry(i, list(c), s, t, True, SamplingParams(temperature=0.0))
                       for i, (c, s, t) in enumerate(zip(chunks, starts, tables))]
            return runner.logits(ScheduledBatch(entries)).float().cpu(), []
        tap = cpu_tap if name == "cpu" else gpu_tap
        metadata = build_attention_metadata(
            [(s, len(c), t) for s, c, t in zip(starts, chunks, tables)], BLOCK, runner.device)
        ids = torch.tensor([t for c in chunks for t in c], device=runner.device)
        pos = torch.tensor([p for s, c in zip(starts, chunks) for p in range(s, s + len(c))], device=runner.device)
        last = torch.tensor([sum(len(c) for c in chunks[:i + 1]) - 1 for i in range(3)], device=runner.device)
        with reference_ops() if name == "plain" else nullcontext():
            hidden, states = tap.run(lambda: runner.model(ids, pos, runner.kv_caches, metadata))
            logits = runner.model.compute_logits(hidden.index_select(0, last)).float().cpu()
        return logits, [s[last.cpu()] for s in states]

    report = []
    chunks = prompts
    for step in range(args.steps + 1):
        results = {name: forward(name, chunks) for name in paths}
        ref_logits, ref_states = results["cpu"]
        row = {"step": "prefill" if step == 0 else f"decode {step}"}
        for name in ("plain", "fused", "graph"):
            logits, states = results[name]
            row[name] = {"logits": _rel(logits, ref_logits),
                         "layers": [_rel(s, r) for s, r in zip(states, ref_states)],
                         "argmax_equal": int((logits.argmax(-1) == ref_logits.argmax(-1)).sum())}
        row["fused_vs_plain_layers"] = [_rel(a, b) for a, b in zip(results["fused"][1], results["plain"][1])]
        report.append(row)
        print(json.dumps(row), flush=True)
        chunks = [[int(t)] for t in ref_logits.argmax(-1)]
    print(json.dumps({"card": torch.cuda.get_device_name(), "rows": report}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
