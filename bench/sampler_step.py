"""What one step's sampling costs: the torch Sampler on random logits of the model's vocabulary, per width and per
kind of request, on the CPU or a GPU (the device's time included: it waits for the tokens).

    python bench/sampler_step.py [--device cpu|cuda] [--rows 8 64 256] [--history 1280] [--repeat 5]

Prints one JSON line a (rows, kind): the median milliseconds of a step. Each row's history (prompt and output
ids, which the penalties read) holds --history random ids, the last quarter of them generated. The sampler is the
runner's, which keeps the penalised rows' histories on the device: the first step writes them from the host, the
timed ones are steps the engine launches ahead (their entries carry no history; each appends its sampled id).
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from tkr_embed.backends.torch.sampler import Sampler  # noqa: E402
from tkr_embed.engine.runner import BatchEntry  # noqa: E402
from tkr_embed.engine.sampling_params import SamplingParams  # noqa: E402
from tkr_embed.harmony.special_tokens import VOCAB_SIZE  # noqa: E402

KINDS = {
    "greedy": SamplingParams(temperature=0.0),
    "temperature 1.0": SamplingParams(temperature=1.0),
    "temperature 0.7, top_p 0.9": SamplingParams(temperature=0.7, top_p=0.9),
    "greedy, presence 0.5": SamplingParams(temperature=0.0, presence_penalty=0.5),
    "greedy, repetition 1.1": SamplingParams(temperature=0.0, repetition_penalty=1.1),
    "temperature 1.0, frequency and presence 0.3": SamplingParams(
        temperature=1.0, frequency_penalty=0.3, presence_penalty=0.3
    ),
}


def step_ms(sampler: Sampler, logits: torch.Tensor, entries: list[BatchEntry], repeat: int) -> float:
    sampler(logits, entries)  # the first call writes the histories, allocates and, on a GPU, compiles
    ahead = [dataclasses.replace(e, prompt_token_ids=(), output_token_ids=(), history_on_host=False) for e in entries]
    times = []
    for _ in range(repeat):
        if logits.is_cuda:
            torch.cuda.synchronize()
        begin = time.perf_counter()
        sampler(logits, ahead)  # reading the tokens waits for the device
        times.append((time.perf_counter() - begin) * 1e3)
    for entry in entries:
        sampler.release(entry.seq_id)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--rows", type=int, nargs="+", default=[8, 64])
    parser.add_argument("--history", type=int, default=1280)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    rng = random.Random(0)
    sampler = Sampler(keep_histories=True)
    seq_ids = itertools.count()
    for rows in args.rows:
        logits = torch.randn(rows, VOCAB_SIZE, generator=torch.Generator().manual_seed(rows)).to(args.device)
        generated = args.history // 4
        histories = [[rng.randrange(VOCAB_SIZE) for _ in range(args.history)] for _ in range(rows)]
        for kind, params in KINDS.items():
            entries = [
                BatchEntry(next(seq_ids), [1], 0, [0], True, params, tuple(h[:-generated]), tuple(h[-generated:]))
                for h in histories
            ]
            ms = step_ms(sampler, logits, entries, args.repeat)
            print(json.dumps({"device": args.device, "rows": rows, "kind": kind, "step_ms": round(ms, 2)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
