"""Arguments of `tkr-embed keys` (kept apart so `--help` stays light)."""

from __future__ import annotations

import argparse


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be a positive integer")
    return value


def add_keys_arguments(parser: argparse.ArgumentParser) -> None:
    """`keys create|list|revoke`, each accepting --data-dir and --database-url (default: the environment)."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--data-dir", default=None, help="data folder (default: GENERATION_DATA_DIR or ./data)")
    common.add_argument(
        "--database-url",
        default=None,
        help="SQLAlchemy URL (default: GENERATION_DATABASE_URL or SQLite in the data folder)",
    )
    common.add_argument("--json", action="store_true", help="print JSON instead of text")

    sub = parser.add_subparsers(dest="keys_command", required=True)
    create = sub.add_parser("create", parents=[common], help="create a key and print it (shown this once)")
    create.add_argument("--name", required=True)
    create.add_argument(
        "--permissions",
        default=None,
        help="comma-separated: generate:text,generate:chat,generate:stream,admin (default: the three generate ones)",
    )
    create.add_argument("--expires-in-days", type=_positive_int, default=None)
    create.add_argument("--burst", type=_positive_int, default=None, help="override the global burst size")
    create.add_argument("--requests-per-minute", type=_positive_int, default=None)
    create.add_argument("--requests-per-hour", type=_positive_int, default=None)
    create.add_argument("--requests-per-day", type=_positive_int, default=None)
    create.add_argument("--tokens-per-minute", type=_positive_int, default=None)

    listing = sub.add_parser("list", parents=[common], help="list keys (never the secrets)")
    listing.add_argument("--active", action="store_true", help="leave out revoked keys")

    revoke = sub.add_parser("revoke", parents=[common], help="revoke a key by id")
    revoke.add_argument("key_id")
