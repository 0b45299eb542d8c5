"""`tkr-embed db upgrade | current`: the schema of the server's database (the one `tkr-embed serve` would use)."""

from __future__ import annotations

import argparse
import asyncio


def add_db_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="db_command", required=True)
    for name, help_text in (
        ("upgrade", "bring the schema to the newest revision (what `serve` does at start-up)"),
        ("current", "print the database's revision and the newest one"),
    ):
        command = sub.add_parser(name, help=help_text)
        command.add_argument(
            "--config", default=None, help="YAML settings file (default: as `tkr-embed serve` finds it)"
        )


async def _run(database_url: str | None, command: str) -> str:
    from tkr_embed.db import Database, resolve_database_url
    from tkr_embed.migrations import current, head_revision, upgrade

    db = Database(resolve_database_url(database_url))
    try:
        if command == "upgrade":
            found, now = await upgrade(db)
            return f"upgraded from {found or 'an empty database'} to {now}" if found != now else f"already at {now}"
        revision = await current(db)
        return f"current: {revision or 'none (not yet migrated)'}; head: {head_revision()}"
    finally:
        await db.close()


def run_db(args: argparse.Namespace) -> int:
    """Entry point of `tkr-embed db ...`; returns the process exit code."""
    from tkr_embed.config import settings_for_command

    settings = settings_for_command(args.config)
    if settings is None:
        return 2
    print(asyncio.run(_run(settings.database_url, args.db_command)))
    return 0
