"""What a step's grammar masks cost on this machine's CPUs: 64 sequences (by default) under one JSON schema, each
walking random allowed tokens, their masks filled one after another or in one parallel call of the grammar engine,
from matchers that are copies of one compiled matcher (or of K, round-robin) or compiled each on its own.

    python3 bench/grammar_masks.py [--sequences 64] [--steps 100] [--schema bench/schemas/order.json] \
        [--threads T] [--templates K]

Random tokens keep the grammar engine meeting new lexer states, as a model with random weights does; prints one
line per way, with the p50 and p90 of a step's fill.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import llguidance  # noqa: E402
import llguidance.numpy  # noqa: E402
import numpy as np  # noqa: E402

from tkr_embed.harmony.special_tokens import RETURN  # noqa: E402
from tkr_embed.structured.matcher import NUM_MASK_WORDS, grammar_tokenizer  # noqa: E402
from tkr_embed.structured.schema import compile_schema  # noqa: E402


def walk(matchers: list, parallel: bool, steps: int, executor) -> list[float]:
    """Each step: fill every matcher's mask, then take a random allowed token; -> the fills' seconds."""
    rng = np.random.default_rng(0)
    words = np.zeros((len(matchers), NUM_MASK_WORDS), np.int32)
    seconds = []
    for _ in range(steps):
        begin = time.perf_counter()
        if parallel:
            llguidance.numpy.fill_next_token_bitmask_par(executor, [(m, i) for i, m in enumerate(matchers)], words)
        else:
            for row, matcher in enumerate(matchers):
                llguidance.numpy.fill_next_token_bitmask(matcher, words, row)
        seconds.append(time.perf_counter() - begin)
        for row, matcher in enumerate(matchers):
            ids = np.nonzero(np.unpackbits(words[row].view(np.uint8), bitorder="little"))[0]
            ids = ids[ids != RETURN]
            if len(ids) and not matcher.is_error():
                matcher.consume_token(int(rng.choice(ids)))
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sequences", type=int, default=64)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--schema", default=str(Path(__file__).parent / "schemas" / "order.json"))
    parser.add_argument("--threads", type=int, default=None, help="the pool's threads (default: the engine's own)")
    parser.add_argument("--templates", type=int, default=0, help="also: copies of K compiled matchers, round-robin")
    args = parser.parse_args()
    grammar = compile_schema(json.loads(Path(args.schema).read_text())).grammar
    tokenizer = grammar_tokenizer()
    executor = llguidance.LLExecutor(args.threads)
    print(f"{os.cpu_count()} CPUs, {args.sequences} sequences, {args.steps} steps, {args.threads or 'default'} threads")
    ways = [(1, False), (1, True), (0, False), (0, True)] + ([(args.templates, True)] if args.templates else [])
    for templates, parallel in ways:  # templates: 0 = a matcher compiled for each sequence
        begin = time.perf_counter()
        if templates:
            compiled = [llguidance.LLMatcher(tokenizer, grammar, log_level=0) for _ in range(templates)]
            matchers = [compiled[i % templates].deep_copy() for i in range(args.sequences)]
        else:
            matchers = [llguidance.LLMatcher(tokenizer, grammar, log_level=0) for _ in range(args.sequences)]
        made_ms = (time.perf_counter() - begin) / args.sequences * 1e3
        seconds = walk(matchers, parallel, args.steps, executor)
        p50, p90 = (np.percentile(seconds, q) * 1e3 for q in (50, 90))
        name = {0: "a matcher compiled each", 1: "copies of one matcher"}.get(templates, f"copies of {templates}")
        print(
            f"{name:24s} {'in parallel' if parallel else 'one by one':12s} fill p50 {p50:6.2f} ms, p90 {p90:6.2f} ms "
            f"({made_ms:.2f} ms to make a matcher)"
        )


if __name__ == "__main__":
    main()
