"""Arguments of `tkr-embed bench` (kept apart so `--help` needs no torch)."""

from __future__ import annotations

import argparse


def add_bench_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=None, help="checkpoint folder, or 'gpt-oss-20b'/'gpt-oss-120b' for random weights of that shape")
    parser.add_argument("--device", default="auto")
