"""API keys: generation, storage of hashes only, authentication, expiry, revocation, master key."""

from __future__ import annotations

import os
import sqlite3
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tkr_embed.db import Database
from tkr_embed.security import hashing
from tkr_embed.security.errors import GatewayInputError, KeyNotFoundError
from tkr_embed.security.hashing import KeyHasher, generate_api_key, load_server_secret, looks_like_api_key
from tkr_embed.security.keys import MASTER_KEY_ID, Authenticator, KeyLimits
from tkr_embed.security.permissions import DEFAULT_PERMISSIONS, Permission, parse_permissions, required_permissions
from tkr_embed.security.store import KeyStore

MASTER = "master-key-for-tests-0123456789"


def test_generated_keys_are_prefixed_256_bit_and_distinct() -> None:
    keys = {generate_api_key() for _ in range(200)}
    assert len(keys) == 200
    for key in keys:
        assert key.startswith("tkr_") and len(key) == 47 and looks_like_api_key(key)
    # 43 base-62 digits carry log2(62**43) ≈ 256.03 bits: enough room for 32 random bytes.
    assert 62**43 > 2**256


async def test_database_dump_holds_no_plaintext_key(key_store: KeyStore, database: Database, tmp_path: Path) -> None:
    created = [await key_store.create(f"tenant-{i}") for i in range(3)]
    await database.close()
    raw_bytes = b"".join(path.read_bytes() for path in tmp_path.iterdir() if path.name.startswith("tkr-embed.db"))
    connection = sqlite3.connect(tmp_path / "tkr-embed.db")
    dump = "\n".join(connection.iterdump())
    connection.close()
    for key in created:
        body = key.api_key[len("tkr_") :]
        assert key.api_key not in dump and body not in dump
        assert body[:12].encode() not in raw_bytes and body[-12:].encode() not in raw_bytes
        # What is stored: the HMAC digest plus a display prefix and the last four characters.
        assert KeyHasher(b"0123456789abcdef0123456789abcdef-test-secret").digest(key.api_key) in dump
        assert key.info.display_prefix == key.api_key[:8] and key.info.last_four == key.api_key[-4:]


async def test_created_key_authenticates_with_its_permissions(key_store: KeyStore, hasher: KeyHasher) -> None:
    created = await key_store.create("chat-only", permissions="generate:chat,generate:stream", expires_in_days=30)
    auth = Authenticator(key_store, hasher)
    info = await auth.authenticate(created.api_key)
    assert info is not None and info.id == created.info.id and info.name == "chat-only"
    assert info.permissions == {Permission.GENERATE_CHAT, Permission.GENERATE_STREAM}
    assert info.allows(Permission.GENERATE_CHAT) and not info.allows(Permission.GENERATE_TEXT)
    assert not info.allows(Permission.ADMIN)
    assert info.expires_at is not None and timedelta(days=29) < info.expires_at - info.created_at <= timedelta(days=30)


async def test_stored_hash_and_near_misses_authenticate_nothing(key_store: KeyStore, hasher: KeyHasher) -> None:
    created = await key_store.create("tenant")
    auth = Authenticator(key_store, hasher, master_key=MASTER)
    stored_digest = hasher.digest(created.api_key)
    flipped = created.api_key[:-1] + ("A" if created.api_key[-1] != "A" else "B")
    for attempt in (stored_digest, "tkr_" + stored_digest[:43], flipped, created.api_key + "x", "", None, MASTER[:-1]):
        assert await auth.authenticate(attempt) is None
    # The same key under another server secret is unknown.
    other = Authenticator(key_store, KeyHasher(b"another-secret-another-secret-another-secret"))
    assert await other.authenticate(created.api_key) is None


async def test_revoked_and_expired_keys_are_refused(database: Database, hasher: KeyHasher) -> None:
    now = [datetime(2030, 1, 1, tzinfo=UTC)]
    store = KeyStore(database, hasher, clock=lambda: now[0])
    auth = Authenticator(store, hasher, clock=lambda: now[0])
    expiring = await store.create("expiring", expires_in_days=1)
    revoked = await store.create("revoked")
    assert await auth.authenticate(expiring.api_key) is not None
    assert await auth.authenticate(revoked.api_key) is not None

    info = await store.revoke(revoked.info.id)
    assert info.revoked_at == now[0]
    assert await auth.authenticate(revoked.api_key) is None

    now[0] += timedelta(days=1, seconds=1)
    assert await auth.authenticate(expiring.api_key) is None
    listed = {key.id: key for key in await store.list()}
    assert set(listed) == {expiring.info.id, revoked.info.id}
    assert [key.id for key in await store.list(include_revoked=False)] == [expiring.info.id]
    with pytest.raises(KeyNotFoundError):
        await store.revoke("key_missing")


async def test_master_key_is_admin_and_compared_in_constant_time(
    key_store: KeyStore, hasher: KeyHasher, monkeypatch: pytest.MonkeyPatch
) -> None:
    compared: list[tuple[bytes, bytes]] = []
    real_compare = hashing.hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return real_compare(a, b)

    monkeypatch.setattr(hashing.hmac, "compare_digest", spy)
    auth = Authenticator(key_store, hasher, master_key=MASTER)
    info = await auth.authenticate(MASTER)
    assert info is not None and info.id == MASTER_KEY_ID and info.is_admin
    assert (MASTER.encode(), MASTER.encode()) in compared

    compared.clear()
    created = await key_store.create("tenant")
    assert await auth.authenticate(created.api_key) is not None
    digest = hasher.digest(created.api_key).encode()
    assert (digest, digest) in compared  # the stored digest is checked with compare_digest too


async def test_create_rejects_bad_input(key_store: KeyStore) -> None:
    with pytest.raises(GatewayInputError) as bad_permission:
        await key_store.create("x", permissions=["generate:text", "root"])
    assert bad_permission.value.param == "permissions"
    with pytest.raises(GatewayInputError) as bad_expiry:
        await key_store.create("x", expires_in_days=0)
    assert bad_expiry.value.param == "expires_in_days"
    with pytest.raises(GatewayInputError) as bad_name:
        await key_store.create("  ")
    assert bad_name.value.param == "name"
    with pytest.raises(GatewayInputError) as bad_limit:
        await key_store.create("x", limits=KeyLimits(requests_per_minute=0))
    assert bad_limit.value.param == "limits.requests_per_minute"
    assert await key_store.list() == []


async def test_per_key_limits_round_trip(key_store: KeyStore) -> None:
    created = await key_store.create("limited", limits=KeyLimits(burst=3, requests_per_day=50))
    fetched = await key_store.get(created.info.id)
    assert fetched.limits == KeyLimits(burst=3, requests_per_day=50)
    assert fetched.permissions == DEFAULT_PERMISSIONS


def test_permissions_parsing_and_route_mapping() -> None:
    assert parse_permissions(None) == DEFAULT_PERMISSIONS
    assert parse_permissions(" admin , generate:text") == {Permission.ADMIN, Permission.GENERATE_TEXT}
    assert required_permissions("/v1/chat/completions") == {Permission.GENERATE_CHAT}
    assert required_permissions("/v1/chat/completions", stream=True) == {
        Permission.GENERATE_CHAT,
        Permission.GENERATE_STREAM,
    }
    assert required_permissions("/v1/completions") == {Permission.GENERATE_TEXT}
    assert required_permissions("/admin/api-keys") == {Permission.ADMIN}
    assert required_permissions("/some/new/route") == {Permission.ADMIN}
    assert required_permissions("/v1/models") == frozenset()


def test_server_secret_file_is_created_once_with_mode_0600(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GENERATION_SECRET_KEY", raising=False)
    first = load_server_secret(tmp_path / "data")
    second = load_server_secret(tmp_path / "data")
    path = tmp_path / "data" / "secret.key"
    assert first == second and len(first) == 64
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    monkeypatch.setenv("GENERATION_SECRET_KEY", "s" * 40)
    assert load_server_secret(tmp_path / "data") == b"s" * 40
    monkeypatch.setenv("GENERATION_SECRET_KEY", "short")
    with pytest.raises(ValueError):
        load_server_secret(tmp_path / "data")
