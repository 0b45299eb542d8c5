"""The wiring pieces: credential extraction and the Gateway built from Settings."""

from __future__ import annotations

from pathlib import Path

import pytest
from starlette.datastructures import Headers

from tkr_embed.config import Settings
from tkr_embed.security.credentials import extract_api_key
from tkr_embed.security.gateway import Gateway
from tkr_embed.security.usage import UsageTotals, usage_totals


def test_extract_api_key_from_each_place() -> None:
    assert extract_api_key(Headers({"x-api-key": " tkr_a "})) == "tkr_a"
    assert extract_api_key(Headers({"Authorization": "Bearer tkr_b"})) == "tkr_b"
    assert extract_api_key({"Authorization": "bearer   tkr_c"}) == "tkr_c"
    assert extract_api_key({}, {"api_key": "tkr_d"}) == "tkr_d"
    assert extract_api_key({"X-API-Key": "tkr_e", "authorization": "Bearer tkr_f"}, {"api_key": "tkr_g"}) == "tkr_e"
    assert extract_api_key({"authorization": "Basic dXNlcjpwYXNz"}) is None
    assert extract_api_key({"authorization": "Bearer "}, {"api_key": ""}) is None


async def test_gateway_from_settings_serves_keys_limits_usage(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GENERATION_SECRET_KEY", raising=False)
    settings = Settings(
        storage={"data_dir": str(tmp_path)},
        security={"api_key": "master-key-for-gateway-tests"},
        rate_limit={"enabled": True, "requests_per_minute": 2, "burst": 5},
        cache={"enabled": True, "max_size": 4, "ttl_seconds": 60},
    )
    gateway = Gateway.from_settings(settings)
    await gateway.start()
    try:
        created = await gateway.keys.create("tenant", limits=None)
        info = await gateway.authenticator.authenticate(created.api_key)
        assert info is not None
        master = await gateway.authenticator.authenticate("master-key-for-gateway-tests")
        assert master is not None and master.is_master
        assert gateway.limiter is not None and gateway.cache is not None and gateway.cache.max_size == 4
        limits = gateway.limits_for(info)
        decisions = [await gateway.limiter.check(info.id, limits) for _ in range(3)]
        assert [d.allowed for d in decisions] == [True, True, False]
        gateway.usage.record(info.id, prompt_tokens=7, completion_tokens=3, cache_hit=True)
    finally:
        await gateway.close()
    reopened = Gateway.from_settings(settings)
    await reopened.start()
    try:
        assert await usage_totals(reopened.db) == {created.info.id: UsageTotals(1, 7, 3, 0, 1)}
        assert await reopened.authenticator.authenticate(created.api_key) is not None  # same secret file
    finally:
        await reopened.close()
