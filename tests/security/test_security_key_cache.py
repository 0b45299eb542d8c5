"""The in-process cache of authenticated keys: found keys remembered for the TTL, misses never,
revocation through this store at once, through another store (replica, CLI) within the TTL."""

from __future__ import annotations

from sqlalchemy import update

from tkr_embed.db import Database
from tkr_embed.security.hashing import KeyHasher
from tkr_embed.security.keys import Authenticator
from tkr_embed.security.models import ApiKeyRow
from tkr_embed.security.permissions import Permission
from tkr_embed.security.store import KeyStore

TTL_S = 5.0


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _cached_store(database: Database, hasher: KeyHasher, clock: Clock) -> KeyStore:
    return KeyStore(database, hasher, lookup_cache_ttl_s=TTL_S, monotonic=clock)


async def test_found_keys_are_remembered_for_the_ttl(database: Database, hasher: KeyHasher) -> None:
    clock = Clock()
    store = _cached_store(database, hasher, clock)
    auth = Authenticator(store, hasher)
    created = await store.create("tenant", permissions=["generate:text"])
    assert (await auth.authenticate(created.api_key)).permissions == {Permission.GENERATE_TEXT}
    # A change behind the store's back (here: in SQL) is not seen while the entry lives...
    async with database.sessions() as session, session.begin():
        await session.execute(update(ApiKeyRow).where(ApiKeyRow.id == created.info.id).values(permissions="admin"))
    clock.now += TTL_S - 0.1
    assert (await auth.authenticate(created.api_key)).permissions == {Permission.GENERATE_TEXT}
    # ...and is once it expires.
    clock.now += 0.2
    assert (await auth.authenticate(created.api_key)).permissions == {Permission.ADMIN}


async def test_misses_are_not_remembered(database: Database, hasher: KeyHasher) -> None:
    clock = Clock()
    replica_a, replica_b = _cached_store(database, hasher, clock), _cached_store(database, hasher, clock)
    created = await replica_a.create("made-elsewhere")
    # B looked the digest up before it existed? It must still find it at once afterwards.
    assert await replica_b.find_by_digest(hasher.digest("tkr_" + "0" * 43)) is None
    assert await Authenticator(replica_b, hasher).authenticate(created.api_key) is not None


async def test_revocation_here_is_immediate_there_within_the_ttl(database: Database, hasher: KeyHasher) -> None:
    clock = Clock()
    here, there = _cached_store(database, hasher, clock), _cached_store(database, hasher, clock)
    auth_here, auth_there = Authenticator(here, hasher), Authenticator(there, hasher)
    created = await here.create("to-revoke")
    assert await auth_here.authenticate(created.api_key) is not None
    assert await auth_there.authenticate(created.api_key) is not None

    await here.revoke(created.info.id)
    assert await auth_here.authenticate(created.api_key) is None  # this process: at once
    assert await auth_there.authenticate(created.api_key) is not None  # another one: until its entry expires
    clock.now += TTL_S + 0.1
    assert await auth_there.authenticate(created.api_key) is None


async def test_ttl_zero_looks_up_every_time(database: Database, hasher: KeyHasher) -> None:
    store, other = KeyStore(database, hasher), KeyStore(database, hasher)
    auth = Authenticator(store, hasher)
    created = await store.create("uncached")
    assert await auth.authenticate(created.api_key) is not None
    await other.revoke(created.info.id)
    assert await auth.authenticate(created.api_key) is None
