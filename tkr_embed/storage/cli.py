"""`tkr-embed responses purge`: delete stored responses past their retention from the server's database, as the
server's own periodic purge does (for a cron job, or a retention shortened since the responses were stored)."""

from __future__ import annotations

import argparse
import asyncio
import sys


def _positive_days(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError("must be a positive number of days")
    return value


def add_responses_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="responses_command", required=True)
    purge = sub.add_parser("purge", help="delete stored responses older than the retention")
    purge.add_argument("--config", default=None, help="YAML settings file (default: as `tkr-embed serve` finds it)")
    purge.add_argument(
        "--older-than-days",
        type=_positive_days,
        default=None,
        help="age in days beyond which responses are deleted (default: storage.responses_retention_days)",
    )


async def _purge(database_url: str, older_than_days: float) -> int:
    from tkr_embed.db import Database, resolve_database_url
    from tkr_embed.storage.responses import ResponseStore

    db = Database(resolve_database_url(database_url))
    try:
        await db.start()
        return await ResponseStore(db).purge(older_than_days)
    finally:
        await db.close()


def run_responses(args: argparse.Namespace) -> int:
    """Entry point of `tkr-embed responses ...`; returns the process exit code."""
    from tkr_embed.config import settings_for_command

    settings = settings_for_command(args.config)
    if settings is None:
        return 2
    days = args.older_than_days or settings.storage.responses_retention_days
    if days is None:
        print("error: no retention is set (storage.responses_retention_days); pass --older-than-days", file=sys.stderr)
        return 2
    purged = asyncio.run(_purge(settings.database_url, days))
    print(f"purged {purged} stored responses older than {days:g} days")
    return 0
