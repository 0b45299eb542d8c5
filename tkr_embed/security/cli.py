"""`tkr-embed keys create|list|revoke` against the server's database."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from datetime import datetime

from tkr_embed.db import Database, resolve_data_dir
from tkr_embed.security.errors import GatewayInputError, KeyNotFoundError
from tkr_embed.security.hashing import KeyHasher, load_server_secret
from tkr_embed.security.keys import KeyInfo, KeyLimits
from tkr_embed.security.store import KeyStore


def _time(moment: datetime | None) -> str | None:
    return moment.isoformat(timespec="seconds") if moment is not None else None


def _describe(info: KeyInfo) -> dict[str, object]:
    limits = {name: value for name, value in vars(info.limits).items() if value is not None}
    return {
        "id": info.id,
        "name": info.name,
        "key": info.hint,
        "permissions": info.permission_names,
        "created_at": _time(info.created_at),
        "expires_at": _time(info.expires_at),
        "revoked_at": _time(info.revoked_at),
        "last_used_at": _time(info.last_used_at),
        "limits": limits,
    }


def _print_key(info: KeyInfo) -> None:
    described = _describe(info)
    state = "revoked" if info.revoked_at else "active"
    print(
        f"{described['id']}  {described['key']}  {state}  name={info.name!r}  "
        f"permissions={','.join(described['permissions'])}  expires={described['expires_at'] or 'never'}  "
        f"last_used={described['last_used_at'] or 'never'}"
    )


async def _run(args: argparse.Namespace) -> int:
    data_dir = resolve_data_dir(args.data_dir)
    db = Database.from_env(args.database_url, data_dir)
    try:
        await db.start()
        store = KeyStore(db, KeyHasher(load_server_secret(data_dir)))
        if args.keys_command == "create":
            created = await store.create(
                args.name,
                permissions=args.permissions,
                expires_in_days=args.expires_in_days,
                limits=KeyLimits(
                    burst=args.burst,
                    requests_per_minute=args.requests_per_minute,
                    requests_per_hour=args.requests_per_hour,
                    requests_per_day=args.requests_per_day,
                    tokens_per_minute=args.tokens_per_minute,
                ),
            )
            if args.json:
                print(json.dumps({**_describe(created.info), "api_key": created.api_key}))
            else:
                _print_key(created.info)
                print(f"api_key: {created.api_key}")
                print("Store this key now: it is not kept and cannot be shown again.", file=sys.stderr)
        elif args.keys_command == "list":
            keys = await store.list(include_revoked=not args.active)
            if args.json:
                print(json.dumps([_describe(info) for info in keys]))
            else:
                for info in keys:
                    _print_key(info)
        else:
            info = await store.revoke(args.key_id)
            if args.json:
                print(json.dumps(_describe(info)))
            else:
                print(f"revoked {info.id} ({info.name})")
        return 0
    finally:
        await db.close()


def run_keys(args: argparse.Namespace) -> int:
    """Entry point of `tkr-embed keys ...`; returns the process exit code."""
    try:
        return asyncio.run(_run(args))
    except GatewayInputError as error:
        print(f"error: {error.message}", file=sys.stderr)
        return 2
    except KeyNotFoundError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
