"""Per-key budgets, reasoning policy, rotation and the audit log over a live server: PATCH and rotate on the admin
API, 429 budget_exceeded with its reset time, the effort stepped down (header, prompt) or refused, the old secret
accepted during its grace period only, and audit rows in the database and at /admin/audit, free of secrets."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from gateway_support import MASTER_KEY, GatewayServer, gateway_server

DB_FILE = "tkr-embed.db"
CHAT = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 16}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayServer]:
    with gateway_server(tmp_path_factory.mktemp("policy"), rate_limit={"enabled": False}) as running:
        yield running


@pytest.fixture
def admin(server: GatewayServer) -> Iterator[httpx.Client]:
    with server.admin() as client:
        yield client


def _chat(server: GatewayServer, key: str, **body: object) -> httpx.Response:
    return httpx.post(
        server.url + "/v1/chat/completions", headers={"Authorization": f"Bearer {key}"}, json={**CHAT, **body}
    )


def _audit_rows(server: GatewayServer) -> list[tuple]:
    with sqlite3.connect(server.settings.data_dir / DB_FILE) as db:
        return db.execute("SELECT actor, client, action, target, changes FROM audit_log ORDER BY id").fetchall()


def test_budgets_and_policy_are_set_at_creation_changed_by_patch_and_shown_in_the_view(
    server: GatewayServer, admin: httpx.Client
) -> None:
    created = server.create_key(
        "policy-a",
        budgets={"day": {"total": 1000}, "month": {"reasoning": 50}},
        reasoning={"allowed_efforts": ["medium", "low"], "above": "refuse"},
    )
    assert created["budgets"] == {
        "day": {"prompt": None, "completion": None, "reasoning": None, "total": 1000},
        "month": {"prompt": None, "completion": None, "reasoning": 50, "total": None},
    }
    assert created["reasoning"] == {
        "allowed_efforts": ["low", "medium"],
        "above": "refuse",
        "max_reasoning_tokens": None,
    }
    assert created["rotation"] is None
    patched = admin.patch(
        f"/admin/api-keys/{created['id']}",
        json={"name": "policy-b", "budgets": {"month": {"completion": 9}}, "reasoning": None},
    )
    assert patched.status_code == 200, patched.text
    view = patched.json()
    assert view["name"] == "policy-b" and view["permissions"] == created["permissions"]  # left out: unchanged
    assert view["budgets"]["day"]["total"] is None and view["budgets"]["month"]["completion"] == 9
    assert view["reasoning"] == {"allowed_efforts": None, "above": "step_down", "max_reasoning_tokens": None}
    assert admin.get(f"/admin/api-keys/{created['id']}").json() == view

    actor, client, action, target, changes = _audit_rows(server)[-1]
    assert (actor, client, action, target) == ("master", "127.0.0.1", "key.updated", created["id"])
    changed = json.loads(changes)
    assert sorted(changed) == ["budgets", "name", "reasoning"]
    assert changed["name"] == {"from": "policy-a", "to": "policy-b"}
    assert changed["reasoning"]["to"] is None and changed["reasoning"]["from"]["above"] == "refuse"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"budgets": {"day": {"total": 0}}}, "budgets.day.total"),
        ({"budgets": {"week": {"total": 5}}}, "budgets.week"),
        ({"reasoning": {"allowed_efforts": ["extreme"]}}, "reasoning.allowed_efforts[0]"),
        ({"reasoning": {"allowed_efforts": []}}, "reasoning.allowed_efforts"),
        ({"reasoning": {"above": "ignore"}}, "reasoning.above"),
        ({"reasoning": {"max_reasoning_tokens": -1}}, "reasoning.max_reasoning_tokens"),
        ({"secret": "x"}, "secret"),
    ],
)
def test_bad_budgets_and_policies_are_a_400_naming_the_field(
    server: GatewayServer, admin: httpx.Client, body: dict, param: str
) -> None:
    key_id = server.create_key("bad-input")["id"]
    response = admin.patch(f"/admin/api-keys/{key_id}", json=body)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param


def test_unknown_and_revoked_keys_cannot_be_changed(server: GatewayServer, admin: httpx.Client) -> None:
    missing = admin.patch("/admin/api-keys/key_nope", json={"name": "x"})
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "key_not_found"
    key_id = server.create_key("to-revoke")["id"]
    assert admin.delete(f"/admin/api-keys/{key_id}").status_code == 200
    for response in (
        admin.patch(f"/admin/api-keys/{key_id}", json={"name": "x"}),
        admin.post(f"/admin/api-keys/{key_id}/rotate", json={"grace_period_s": 5}),
    ):
        assert response.status_code == 409 and response.json()["error"]["code"] == "key_revoked"


def test_a_spent_budget_gets_429_with_its_reset_time_and_the_usage_shows_it(
    server: GatewayServer, admin: httpx.Client
) -> None:
    created = server.create_key("budgeted")
    key = created["api_key"]
    first = _chat(server, key)
    assert first.status_code == 200
    per_request = first.json()["usage"]["total_tokens"]
    assert per_request > 0
    admin.patch(f"/admin/api-keys/{created['id']}", json={"budgets": {"day": {"total": 3 * per_request}}})
    assert [_chat(server, key).status_code for _ in range(2)] == [200, 200]
    refused = _chat(server, key)
    assert refused.status_code == 429
    error = refused.json()
    assert error["error"]["code"] == "budget_exceeded" and error["error"]["type"] == "rate_limit_error"
    tomorrow = datetime.combine(datetime.now(UTC).date() + timedelta(days=1), datetime.min.time(), UTC)
    assert refused.headers["x-budget-reset"] == tomorrow.isoformat().replace("+00:00", "Z")
    assert 0 < int(refused.headers["retry-after"]) <= 86401
    assert error["budget"] == {
        "period": "day",
        "kind": "total",
        "limit": 3 * per_request,
        "used": 3 * per_request,
        "resets_at": tomorrow.isoformat().replace("+00:00", "Z"),
    }
    assert "daily total token budget" in error["error"]["message"]

    usage = admin.get("/admin/usage", params={"key_id": created["id"], "days": 7}).json()
    (row,) = usage["data"]
    assert row["budget"]["day"]["used"]["total"] == 3 * per_request
    assert row["budget"]["day"]["limit"]["total"] == 3 * per_request
    assert row["budget"]["day"]["resets_at"].startswith(tomorrow.date().isoformat())
    usage = admin.get("/admin/usage", params={"key_id": created["id"]}).json()  # no wait for the batch writer
    (day,) = usage["data"][0]["days"]
    assert day["requests"] == 3 and day["total_tokens"] == 3 * per_request  # the refused one is not counted
    # A raised budget lets the key in again.
    admin.patch(f"/admin/api-keys/{created['id']}", json={"budgets": {"day": {"total": 10 * per_request}}})
    assert _chat(server, key).status_code == 200


def test_an_effort_above_the_policy_is_stepped_down_with_headers_or_refused(
    server: GatewayServer, admin: httpx.Client
) -> None:
    prompts: list[str] = []
    engine = server.engine
    scripted = engine.script

    def record(prompt: list[int], params: object) -> object:
        prompts.append(engine.decode(prompt))
        return scripted(prompt, params)

    engine.script = record
    try:
        created = server.create_key("efforts", reasoning={"allowed_efforts": ["low"], "above": "step_down"})
        stepped = _chat(server, created["api_key"], reasoning_effort="high")
        assert stepped.status_code == 200
        assert stepped.headers["x-reasoning-effort-applied"] == "low"
        assert stepped.headers["x-reasoning-effort-requested"] == "high"
        assert "Reasoning: low" in prompts[-1]
        default = _chat(server, created["api_key"])  # the server's default, medium, is above the policy too
        assert default.headers["x-reasoning-effort-applied"] == "low" and "Reasoning: low" in prompts[-1]
        allowed = _chat(server, created["api_key"], reasoning_effort="low")
        assert allowed.status_code == 200 and "x-reasoning-effort-applied" not in allowed.headers
        responses = httpx.post(
            server.url + "/v1/responses",
            headers={"X-API-Key": created["api_key"]},
            json={"input": "hi", "reasoning": {"effort": "medium"}, "max_output_tokens": 16},
        )
        assert responses.status_code == 200 and responses.headers["x-reasoning-effort-applied"] == "low"
        assert responses.json()["reasoning"]["effort"] == "low" and "Reasoning: low" in prompts[-1]
        with httpx.stream(
            "POST",
            server.url + "/v1/chat/completions",
            headers={"X-API-Key": created["api_key"]},
            json={**CHAT, "reasoning_effort": "high", "stream": True},
        ) as streamed:
            assert streamed.status_code == 200 and streamed.headers["x-reasoning-effort-applied"] == "low"
            assert b"data: [DONE]" in b"".join(streamed.iter_bytes())
        assert "Reasoning: low" in prompts[-1]

        native = httpx.post(
            server.url + "/chat",
            headers={"X-API-Key": created["api_key"]},
            json={"messages": [{"role": "user", "content": "hi"}], "reasoning_level": "high", "max_tokens": 8},
        )
        assert native.status_code == 200 and native.headers["x-reasoning-effort-applied"] == "low"
        assert "Reasoning: low" in prompts[-1]

        admin.patch(
            f"/admin/api-keys/{created['id']}", json={"reasoning": {"allowed_efforts": ["low"], "above": "refuse"}}
        )
        calls = len(prompts)
        refused = _chat(server, created["api_key"], reasoning_effort="medium")
        assert refused.status_code == 403
        assert refused.json()["error"]["code"] == "reasoning_effort_not_allowed"
        assert refused.json()["error"]["param"] == "reasoning_effort"
        assert "'medium'" in refused.json()["error"]["message"] and "low" in refused.json()["error"]["message"]
        responses = httpx.post(
            server.url + "/v1/responses",
            headers={"X-API-Key": created["api_key"]},
            json={"input": "hi", "reasoning": {"effort": "high"}, "max_output_tokens": 8},
        )
        assert responses.status_code == 403 and responses.json()["error"]["param"] == "reasoning.effort"
        assert len(prompts) == calls  # nothing reached the engine
    finally:
        engine.script = scripted


def test_rotation_gives_a_new_secret_and_the_old_one_works_until_its_grace_period_ends(
    server: GatewayServer, admin: httpx.Client
) -> None:
    created = server.create_key("rotating", permissions=["generate:chat"])
    old = created["api_key"]
    rotated = admin.post(f"/admin/api-keys/{created['id']}/rotate", json={"grace_period_s": 3600})
    assert rotated.status_code == 200, rotated.text
    body = rotated.json()
    new = body["api_key"]
    assert new != old and body["id"] == created["id"] and body["permissions"] == ["generate:chat"]
    assert body["rotation"]["previous_key_hint"] == created["key_hint"]
    ends = datetime.fromisoformat(body["rotation"]["previous_expires_at"])
    assert timedelta(minutes=59) < ends - datetime.now(UTC) <= timedelta(hours=1)
    assert _chat(server, new).status_code == 200 and _chat(server, old).status_code == 200

    again = admin.post(f"/admin/api-keys/{created['id']}/rotate", json={"grace_period_s": 0}).json()
    assert again["rotation"] is None
    assert _chat(server, new).status_code == 401 and _chat(server, old).status_code == 401
    assert _chat(server, again["api_key"]).status_code == 200

    listed = {view["id"]: view for view in admin.get("/admin/api-keys").json()["data"]}
    assert "api_key" not in listed[created["id"]]
    admin.delete(f"/admin/api-keys/{created['id']}")
    assert _chat(server, again["api_key"]).status_code == 401

    rotations = [row for row in _audit_rows(server) if row[2] == "key.rotated" and row[3] == created["id"]]
    assert [json.loads(row[4])["grace_period_s"]["to"] for row in rotations] == [3600, 0]


def test_every_admin_action_is_audited_without_secrets(server: GatewayServer, admin: httpx.Client) -> None:
    admin_key = server.create_key("second-admin", permissions=["admin"])
    with httpx.Client(base_url=server.url, headers={"X-API-Key": admin_key["api_key"]}) as other:
        created = other.post("/admin/api-keys", json={"name": "audited", "budgets": {"day": {"prompt": 5}}}).json()
        other.patch(f"/admin/api-keys/{created['id']}", json={"permissions": ["generate:text"]})
        rotated = other.post(f"/admin/api-keys/{created['id']}/rotate", json={}).json()
        other.delete(f"/admin/api-keys/{created['id']}")
        assert other.get("/admin/config").status_code == 200

    rows = [row for row in _audit_rows(server) if row[0] == admin_key["id"]]
    assert [(row[2], row[3]) for row in rows] == [
        ("key.created", created["id"]),
        ("key.updated", created["id"]),
        ("key.rotated", created["id"]),
        ("key.revoked", created["id"]),
        ("config.viewed", None),
    ]
    assert json.loads(rows[0][4])["budgets"]["to"]["day"]["prompt"] == 5
    assert json.loads(rows[1][4]) == {
        "permissions": {"from": ["generate:chat", "generate:stream", "generate:text"], "to": ["generate:text"]}
    }
    assert json.loads(rows[2][4])["grace_period_s"] == {"from": None, "to": 3600}
    dump = repr(_audit_rows(server))
    for secret in (created["api_key"], rotated["api_key"], admin_key["api_key"], MASTER_KEY):
        assert secret not in dump and secret[8:-4] not in dump

    page = admin.get("/admin/audit", params={"limit": 3}).json()
    assert [entry["action"] for entry in page["data"]] == ["config.viewed", "key.revoked", "key.rotated"]
    assert page["has_more"] is True and page["data"][0]["actor"] == admin_key["id"]
    assert page["data"][0]["client"] == "127.0.0.1"
    older = admin.get("/admin/audit", params={"limit": 2, "before": page["data"][-1]["id"]}).json()
    assert [entry["action"] for entry in older["data"]] == ["key.updated", "key.created"]
    assert admin.get("/admin/audit", params={"limit": 0}).status_code == 400
    forbidden = httpx.get(server.url + "/admin/audit", headers={"X-API-Key": created["api_key"]})
    assert forbidden.status_code == 401
