"""Arguments of `tkr-embed bench` (kept apart so `--help` needs no torch)."""

from __future__ import annotations

import argparse


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a positive integer")
    return value


def add_bench_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        default=None,
        help="checkpoint folder (default: a tiny demo checkpoint written to a temporary folder)",
    )
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | mlx")
    parser.add_argument(
        "--streams",
        type=positive_int,
        nargs="+",
        default=[8],
        help="parallel streams of the throughput run; several widths run in turn on one engine (a sweep)",
    )
    parser.add_argument(
        "--max-num-seqs",
        type=positive_int,
        default=None,
        help="sequences the engine runs at once (default: the device's default, or the largest --streams width if wider)",
    )
    parser.add_argument("--prompt-len", type=int, default=128, help="prompt tokens of the decode runs")
    parser.add_argument("--output-len", type=int, default=64, help="new tokens per stream")
    parser.add_argument("--long-prompt-len", type=int, default=1000, help="prompt tokens of the prefill run")
    parser.add_argument(
        "--max-num-batched-tokens",
        type=int,
        default=None,
        help="tokens per engine step (default: the engine's; the server's default is 8192)",
    )
    parser.add_argument(
        "--max-num-batched-tokens-idle",
        type=int,
        default=None,
        help="tokens of a step in which no sequence decodes (default as the server: 4x the step "
        "budget on CUDA, else the same)",
    )
    parser.add_argument(
        "--warmup-streams",
        action="store_true",
        help="run the timed runs' shapes once (one prompt, then the streams; 2 new tokens) before timing them",
    )
    parser.add_argument(
        "--no-lookahead",
        dest="lookahead",
        action="store_false",
        help="launch each decode step only after the previous step's tokens are read",
    )
    parser.add_argument(
        "--json-schema",
        default=None,
        metavar="FILE",
        help="also run the widest width's streams with their final answers held to this JSON schema, then the same "
        "prompts without it, each cut to its structured answer's length (structured_slowdown in the report)",
    )
    parser.add_argument(
        "--structured-max-tokens", type=positive_int, default=512, help="max_tokens of a --json-schema request"
    )
    parser.add_argument(
        "--structured-rounds",
        type=positive_int,
        default=2,
        help="requests per stream in the --json-schema runs (all submitted at once, run max_num_seqs at a time)",
    )
    parser.add_argument(
        "--temperature",
        type=float,
        default=0.0,
        help="temperature of the decode runs (default 0: greedy; 1.0 is what a chat client sends unless told)",
    )
    parser.add_argument("--top-p", type=float, default=1.0, help="top_p of the decode runs")
    parser.add_argument("--repetition-penalty", type=float, default=1.0, help="repetition_penalty of the decode runs")
    parser.add_argument("--presence-penalty", type=float, default=0.0, help="presence_penalty of the decode runs")
    parser.add_argument("--frequency-penalty", type=float, default=0.0, help="frequency_penalty of the decode runs")
    parser.add_argument("--seed", type=int, default=0)
