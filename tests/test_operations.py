"""Health, readiness, metrics and the OpenAPI document."""

from __future__ import annotations

from contracts.events import EVENT_TYPES
from tests.conftest import Api
from tests.factories import cart_updated


async def test_healthz(api: Api):
    response = await api.http.get("/healthz")

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_readyz_when_everything_is_up(api: Api):
    response = await api.http.get("/readyz")

    assert response.status_code == 200
    assert response.json()["checks"]["database"] == "ok"
    assert response.json()["checks"]["temporal"] == "ok"


async def test_metrics_count_events_by_outcome(api: Api):
    event = cart_updated()
    await api.post_event(event)
    await api.post_event(event)

    text = (await api.http.get("/metrics")).text

    assert 'sutra_events_total{outcome="accepted",type="cart.updated"}' in text
    assert 'sutra_events_total{outcome="duplicate",type="cart.updated"}' in text
    assert 'sutra_http_request_seconds_count{method="POST",route="/v1/events",status="202"}' in text


async def test_openapi_documents_every_event_type(api: Api):
    schema = (await api.http.get("/openapi.json")).json()

    event = schema["components"]["schemas"]["Event"]
    mapping = event["discriminator"]["mapping"]
    assert set(mapping) == set(EVENT_TYPES)
    assert "order.placed" in mapping
    body = schema["paths"]["/v1/events"]["post"]["requestBody"]["content"]["application/json"]
    assert body["schema"] == {"$ref": "#/components/schemas/Event"}
    for ref in mapping.values():
        assert ref.rsplit("/", 1)[1] in schema["components"]["schemas"]
    assert (await api.http.get("/docs")).status_code == 200


async def test_rejected_events_are_counted_without_minting_series(api: Api):
    event = cart_updated()
    event["type"] = "attacker.chosen.label"

    assert (await api.post_event(event)).status_code == 422

    text = (await api.http.get("/metrics")).text
    assert 'sutra_events_total{outcome="rejected",type="unknown"}' in text
    assert "attacker.chosen.label" not in text
