"""`tkr-embed keys create|list|revoke` against the same database the server reads."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from tkr_embed.cli import main
from tkr_embed.db import Database, resolve_database_url
from tkr_embed.security.hashing import KeyHasher, load_server_secret
from tkr_embed.security.keys import Authenticator
from tkr_embed.security.permissions import Permission
from tkr_embed.security.store import KeyStore


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


async def test_create_list_revoke_round_trip(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("GENERATION_SECRET_KEY", raising=False)
    monkeypatch.delenv("GENERATION_DATABASE_URL", raising=False)
    monkeypatch.setenv("GENERATION_DATA_DIR", str(tmp_path))

    # main() runs its own event loop; run it in a thread so this test's loop stays free.
    async def cli(*argv: str) -> tuple[int, str, str]:
        return await asyncio.to_thread(_run, capsys, *argv)

    code, out, err = await cli(
        "keys",
        "create",
        "--name",
        "ci",
        "--permissions",
        "generate:chat,admin",
        "--expires-in-days",
        "7",
        "--json",
        "--requests-per-minute",
        "5",
    )
    assert code == 0 and "cannot be shown again" not in err
    created = json.loads(out)
    api_key = created["api_key"]
    assert api_key.startswith("tkr_") and created["permissions"] == ["admin", "generate:chat"]
    assert created["limits"] == {"requests_per_minute": 5}

    # The server side (same data folder: same secret file, same database) accepts the key.
    db = Database(resolve_database_url(data_dir=tmp_path))
    await db.start()
    hasher = KeyHasher(load_server_secret(tmp_path))
    auth = Authenticator(KeyStore(db, hasher), hasher)
    info = await auth.authenticate(api_key)
    assert info is not None and info.id == created["id"] and info.allows(Permission.GENERATE_TEXT)

    code, out, _ = await cli("keys", "list")
    assert code == 0 and created["id"] in out and api_key not in out and api_key[-4:] in out

    code, out, _ = await cli("keys", "revoke", created["id"])
    assert code == 0 and out.strip() == f"revoked {created['id']} (ci)"
    assert await auth.authenticate(api_key) is None
    code, out, _ = await cli("keys", "list", "--active", "--json")
    assert json.loads(out) == []
    await db.close()

    code, _, err = await cli("keys", "revoke", "key_nope")
    assert code == 1 and "key_nope" in err
    code, _, err = await cli("keys", "create", "--name", "x", "--permissions", "root")
    assert code == 2 and "unknown permission 'root'" in err


def test_text_output_prints_the_key_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("GENERATION_SECRET_KEY", raising=False)
    monkeypatch.delenv("GENERATION_DATABASE_URL", raising=False)
    code, out, err = _run(capsys, "keys", "create", "--name", "ops", "--data-dir", str(tmp_path))
    assert code == 0 and "cannot be shown again" in err
    api_key = out.strip().splitlines()[-1].removeprefix("api_key: ")
    assert api_key.startswith("tkr_") and out.count(api_key) == 1
    code, out, _ = _run(capsys, "keys", "list", "--data-dir", str(tmp_path))
    assert "name='ops'" in out and api_key not in out
    assert (tmp_path / "tkr-embed.db").exists() and (tmp_path / "secret.key").exists()
