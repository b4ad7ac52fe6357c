"""API keys: 401 without a valid key, 403 without the scope, keys hashed, shown once."""

from __future__ import annotations

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from db.models import ApiKey, Event
from services.platform.api_keys import hash_key
from tests.conftest import ADMIN_KEY, Api, auth
from tests.factories import cart_updated


async def _create_key(api: Api, scopes: list[str], name: str = "test key") -> dict:
    response = await api.http.post(
        "/v1/api-keys", json={"name": name, "scopes": scopes}, headers=auth(ADMIN_KEY)
    )
    assert response.status_code == 201, response.text
    return response.json()


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({}, id="no-header"),
        pytest.param({"Authorization": "Bearer "}, id="empty-key"),
        pytest.param({"Authorization": "Basic dXNlcjpwYXNz"}, id="wrong-scheme"),
        pytest.param({"Authorization": "Bearer sutra_not_a_real_key"}, id="unknown-key"),
    ],
)
async def test_missing_or_invalid_key_is_401(api: Api, sessionmaker, headers: dict[str, str]):
    event = cart_updated()

    response = await api.http.post("/v1/events", json=event, headers=headers)

    assert response.status_code == 401
    assert response.json()["error"] == "unauthorized"
    assert response.headers["www-authenticate"] == "Bearer"
    async with sessionmaker() as session:
        assert await session.get(Event, event["id"]) is None


async def test_authentication_comes_before_reading_the_body(api: Api):
    response = await api.http.post(
        "/v1/events", content=b"{broken", headers={"Content-Type": "application/json"}
    )

    assert response.status_code == 401


async def test_key_without_scope_is_403(api: Api, sessionmaker):
    reader = await _create_key(api, ["rules:read"])
    event = cart_updated()

    response = await api.post_event(event, key=reader["key"])

    assert response.status_code == 403
    assert response.json()["error"] == "forbidden"
    assert "events:write" in response.json()["detail"]
    async with sessionmaker() as session:
        assert await session.get(Event, event["id"]) is None


async def test_scoped_key_can_do_its_job_and_nothing_else(api: Api):
    backend = await _create_key(api, ["events:write"], name="shop backend")

    assert (await api.post_event(cart_updated(), key=backend["key"])).status_code == 202
    listed = await api.http.get("/v1/api-keys", headers=auth(backend["key"]))
    assert listed.status_code == 403


async def test_created_key_is_shown_once_and_stored_hashed(
    api: Api, sessionmaker: async_sessionmaker[AsyncSession]
):
    created = await _create_key(api, ["events:write", "ops"])

    assert created["key"].startswith("sutra_")
    assert created["scopes"] == ["events:write", "ops"]
    async with sessionmaker() as session:
        row = await session.scalar(select(ApiKey).where(ApiKey.id == created["id"]))
    assert row is not None
    assert row.key_hash == hash_key(created["key"])
    assert created["key"] not in (row.key_hash, row.prefix)
    listed = (await api.get("/v1/api-keys")).json()
    assert created["id"] in [k["id"] for k in listed]
    assert all("key" not in k for k in listed)


async def test_revoked_key_stops_working(api: Api):
    created = await _create_key(api, ["events:write"])
    assert (await api.post_event(cart_updated(), key=created["key"])).status_code == 202

    revoked = await api.http.delete(f"/v1/api-keys/{created['id']}", headers=auth(ADMIN_KEY))

    assert revoked.status_code == 200
    assert revoked.json()["revoked_at"] is not None
    assert (await api.post_event(cart_updated(), key=created["key"])).status_code == 401


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        pytest.param({"name": "x", "scopes": ["events:delete"]}, ["body", "scopes", 0], id="scope"),
        pytest.param({"name": "x", "scopes": []}, ["body", "scopes"], id="no-scopes"),
        pytest.param({"name": "", "scopes": ["ops"]}, ["body", "name"], id="empty-name"),
    ],
)
async def test_invalid_key_requests_are_422(api: Api, body: dict, loc: list):
    response = await api.http.post("/v1/api-keys", json=body, headers=auth(ADMIN_KEY))

    assert response.status_code == 422
    assert response.json()["fields"][0]["loc"] == loc


async def test_only_admin_creates_keys(api: Api):
    ops = await _create_key(api, ["ops"])

    response = await api.http.post(
        "/v1/api-keys", json={"name": "x", "scopes": ["admin"]}, headers=auth(ops["key"])
    )

    assert response.status_code == 403
