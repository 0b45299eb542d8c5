"""Arguments of `tkr-embed keys` (kept apart so `--help` stays light)."""

from __future__ import annotations

import argparse


def add_keys_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="keys_command", required=True)
    sub.add_parser("list", help="list keys (never the secrets)")
