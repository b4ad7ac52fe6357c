"""Templates over the API: refused with the line when broken or unsafe, used when good."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import ADMIN_KEY, Api, auth

GOOD_EMAIL = {
    "subject": "Hi {{ customer.first_name }}, your cart misses you",
    "html": "<p>{{ cart.first_item_name }} for {{ cart.total | money(cart.currency) }}</p>",
    "text": "{{ cart.first_item_name }}: {{ cart.checkout_url }}",
}


async def _put(api: Api, name: str, body: dict[str, Any], key: str = ADMIN_KEY) -> Any:
    return await api.http.put(f"/v1/templates/{name}", json=body, headers=auth(key))


async def test_catalog_templates_are_listed_with_their_locales(api: Api):
    response = await api.get("/v1/templates/cart_reminder_1")

    assert response.status_code == 200
    body = response.json()
    assert body["kind"] == "marketing"
    assert "cart" in body["variables"]
    assert {"channel": "email", "locale": "en", "source": "default"}.items() <= body["variants"][
        0
    ].items()


async def test_a_stored_version_is_what_gets_rendered(api: Api):
    name = "cart_reminder_1"
    try:
        response = await _put(api, name, {"channels": {"email": {"en": GOOD_EMAIL}}})
        assert response.status_code == 200, response.text

        preview = await api.http.post(
            f"/v1/templates/{name}/preview",
            json={"channel": "email", "locale": "en-PK"},
            headers=auth(ADMIN_KEY),
        )
        assert preview.status_code == 200
        assert preview.json()["subject"] == "Hi Ayesha, your cart misses you"
        assert "Rs" in preview.json()["html"]  # en-PK formats rupees, in the stored HTML
        variants = (await api.get(f"/v1/templates/{name}")).json()["variants"]
        email_en = next(v for v in variants if v["channel"] == "email" and v["locale"] == "en")
        assert email_en["source"] == "custom"
        assert email_en["version"] == 1
    finally:
        await api.http.delete(f"/v1/templates/{name}", headers=auth(ADMIN_KEY))
    variants = (await api.get(f"/v1/templates/{name}")).json()["variants"]
    assert all(v["source"] == "default" for v in variants)


async def test_stored_html_is_escaped(api: Api):
    name = "escaping_check"
    body = {
        "kind": "marketing",
        "context": ["cart"],
        "channels": {
            "email": {
                "en": {
                    "subject": "Hi",
                    "html": "<p>{{ cart.first_item_name }}</p>",
                    "text": "{{ cart.first_item_name }}",
                }
            }
        },
    }
    assert (await _put(api, name, body)).status_code == 200
    try:
        preview = await api.http.post(
            f"/v1/templates/{name}/preview",
            json={
                "channel": "email",
                "context": {"cart": {"first_item_name": "<script>alert(1)</script>"}},
            },
            headers=auth(ADMIN_KEY),
        )
        assert "&lt;script&gt;" in preview.json()["html"]
        assert "<script>" not in preview.json()["html"]
    finally:
        await api.http.delete(f"/v1/templates/{name}", headers=auth(ADMIN_KEY))


@pytest.mark.parametrize(
    ("part", "source", "loc", "message"),
    [
        pytest.param(
            "html",
            "<p>ok</p>\n<p>{% if cart.total %}unclosed</p>",
            ["html"],
            "line 2",
            id="syntax-error",
        ),
        pytest.param(
            "text",
            "Hello\n\n{{ cartt.total }}",
            ["text"],
            "line 3: unknown variable 'cartt'",
            id="unknown-variable",
        ),
        pytest.param(
            "subject",
            "{{ cart.no_such_field }}",
            ["subject"],
            "no_such_field",
            id="unknown-field",
        ),
        pytest.param(
            "text",
            "{{ ''.__class__.__mro__ }}",
            ["text"],
            "not allowed",
            id="python-internals",
        ),
        pytest.param(
            "text",
            "{{ cart.items.__class__.__base__.__subclasses__() }}",
            ["text"],
            "not allowed",
            id="subclasses-walk",
        ),
        pytest.param(
            "text",
            "{{ cycler.__init__.__globals__.os.environ }}",
            ["text"],
            "not allowed",
            id="globals-via-helper",
        ),
        pytest.param(
            "text",
            "{{ self._TemplateReference__context }}",
            ["text"],
            "not allowed",
            id="template-context",
        ),
    ],
)
async def test_a_broken_or_unsafe_template_is_refused_naming_the_line(
    api: Api, part: str, source: str, loc: list[str], message: str
):
    email = {**GOOD_EMAIL, part: source}

    response = await _put(api, "cart_reminder_1", {"channels": {"email": {"en": email}}})

    assert response.status_code == 422, response.text
    body = response.json()
    assert body["error"] == "validation_error"
    assert body["fields"][0]["loc"] == ["body", "channels", "email", "en", *loc]
    assert message in body["fields"][0]["msg"], body
    variants = (await api.get("/v1/templates/cart_reminder_1")).json()["variants"]
    assert all(v["source"] == "default" for v in variants)


async def test_a_template_cannot_change_kind(api: Api):
    response = await _put(api, "order_shipped_x", {"channels": {"sms": {"en": {"text": "hi"}}}})
    assert response.status_code == 422
    assert response.json()["fields"][0]["loc"] == ["body", "kind"]

    catalog = await _put(
        api,
        "cart_reminder_1",
        {"kind": "transactional", "channels": {"sms": {"en": {"text": "x"}}}},
    )
    assert catalog.status_code == 422
    assert "stays one" in catalog.json()["detail"]


async def test_whatsapp_content_template_needs_a_real_sid(api: Api):
    response = await _put(
        api,
        "cart_reminder_1",
        {"channels": {"whatsapp": {"en": {"content_sid": "HX123", "variables": {"1": "x"}}}}},
    )

    assert response.status_code == 422
    assert response.json()["fields"][0]["loc"][:5] == [
        "body",
        "channels",
        "whatsapp",
        "en",
        "content_sid",
    ]


async def test_writing_templates_needs_the_rules_write_scope(api: Api):
    reader = (
        await api.http.post(
            "/v1/api-keys", json={"name": "r", "scopes": ["rules:read"]}, headers=auth(ADMIN_KEY)
        )
    ).json()["key"]

    assert (await api.get("/v1/templates", key=reader)).status_code == 200
    response = await _put(api, "cart_reminder_1", {"channels": {}}, key=reader)
    assert response.status_code == 403
