"""The dashboard's sign-in, session and scopes over plain HTTP (the real app, in-process):
what the cookie carries and how it is flagged, CSRF on both forms, the page a key without
the scope gets, and a revoked key's session ending at its next page."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from config.settings import Settings
from db.models import Message
from tests.conftest import ADMIN_KEY, Api, auth, make_settings, start_api
from tests.factories import uid

CSRF = re.compile(r'name="csrf" value="([^"]+)"')
MESSAGE = re.compile(r'<tr data-message="([^"]+)"')
OLDER = re.compile(r'rel="next" href="([^"]+)"')


async def _key(api: Api, *scopes: str) -> tuple[str, str]:
    created = await api.http.post(
        "/v1/api-keys",
        json={"name": f"key {' '.join(scopes)}", "scopes": list(scopes)},
        headers=auth(ADMIN_KEY),
    )
    assert created.status_code == 201, created.text
    return created.json()["key"], created.json()["id"]


async def _sign_in(
    http: httpx.AsyncClient, key: str, next_page: str = "/dashboard"
) -> httpx.Response:
    form = await http.get("/dashboard/sign-in")
    assert form.status_code == 200
    [token] = CSRF.findall(form.text)
    return await http.post(
        "/dashboard/sign-in",
        data={"key": key, "csrf": token, "next": next_page},
    )


@pytest.fixture
async def browser(api: Api) -> AsyncIterator[httpx.AsyncClient]:
    """A client of its own, with its own cookie jar, like one browser."""
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=api.http._transport.app),  # type: ignore[attr-defined]
        base_url="http://sutra",
    ) as client:
        yield client


async def test_a_page_without_a_session_sends_the_browser_to_sign_in(browser: httpx.AsyncClient):
    page = await browser.get("/dashboard/rules")
    assert page.status_code == 303
    assert page.headers["location"] == "/dashboard/sign-in?next=%2Fdashboard%2Frules"


async def test_signing_in_sets_a_signed_httponly_lax_cookie_holding_no_key(
    api: Api, browser: httpx.AsyncClient
):
    key, _ = await _key(api, "analytics:read")
    signed_in = await _sign_in(browser, key, "/dashboard/rules")

    assert signed_in.status_code == 303
    assert signed_in.headers["location"] == "/dashboard/rules"
    assert key not in signed_in.headers["location"]
    [cookie] = [
        c for c in signed_in.headers.get_list("set-cookie") if c.startswith("sutra_dashboard=")
    ]
    flags = [part.strip().lower() for part in cookie.split(";")]
    assert "httponly" in flags
    assert "samesite=lax" in flags
    assert "path=/dashboard" in flags
    assert "max-age=43200" in flags  # 12 hours
    assert "secure" not in flags  # SUTRA_PUBLIC_URL is http here
    value = cookie.split(";")[0].split("=", 1)[1]
    assert key not in value
    assert key[6:] not in value
    page = await browser.get("/dashboard/rules")
    assert page.status_code == 200
    assert "<h1>Rules</h1>" in page.text
    assert "key analytics:read" in page.text  # who is signed in


async def test_the_cookie_is_secure_behind_an_https_public_url(
    settings: Settings, database_url: str, task_queue: str
):
    https = make_settings(
        database_url,
        settings.temporal_address,
        task_queue,
        public_url="https://sutra.example.com",
        dispatcher_enabled=False,
    )
    api, manager = await start_api(https)
    # A Secure cookie is sent back over https only, as a browser does.
    client = httpx.AsyncClient(transport=api.http._transport, base_url="https://sutra")
    try:
        signed_in = await _sign_in(client, ADMIN_KEY)
        [cookie] = [
            c for c in signed_in.headers.get_list("set-cookie") if c.startswith("sutra_dashboard=")
        ]
        assert "secure" in [part.strip().lower() for part in cookie.split(";")]
    finally:
        await client.aclose()
        await api.http.aclose()
        await manager.__aexit__(None, None, None)


async def test_sign_in_refuses_a_form_without_its_csrf_token_and_a_bad_key(
    browser: httpx.AsyncClient,
):
    await browser.get("/dashboard/sign-in")
    forged = await browser.post("/dashboard/sign-in", data={"key": ADMIN_KEY, "csrf": "guess"})
    assert forged.status_code == 400
    assert "sutra_dashboard=" not in forged.headers.get("set-cookie", "")
    assert "The form had expired" in forged.text

    wrong = await _sign_in(browser, "sutra_not_a_key")
    assert wrong.status_code == 401
    assert "not valid, or it has been revoked" in wrong.text
    assert (await browser.get("/dashboard")).status_code == 303


async def test_a_key_without_analytics_read_gets_a_page_naming_the_scope(
    api: Api, browser: httpx.AsyncClient
):
    key, _ = await _key(api, "rules:read")
    refused = await _sign_in(browser, key)
    assert refused.status_code == 403
    assert "<code data-scope>analytics:read</code>" in refused.text
    assert "sutra_dashboard=" not in refused.headers.get("set-cookie", "")


async def test_the_ops_pages_name_the_ops_scope_to_an_analytics_key(
    api: Api, browser: httpx.AsyncClient
):
    key, _ = await _key(api, "analytics:read")
    await _sign_in(browser, key)
    for path in ("/dashboard/messages", "/dashboard/customers", "/dashboard/customers/c_1"):
        page = await browser.get(path)
        assert page.status_code == 403, path
        assert "<code data-scope>ops</code>" in page.text
    assert (await browser.get("/dashboard/payments")).status_code == 200


async def test_sign_out_needs_the_session_csrf_token(api: Api, browser: httpx.AsyncClient):
    key, _ = await _key(api, "analytics:read")
    await _sign_in(browser, key)
    page = await browser.get("/dashboard")
    [token] = CSRF.findall(page.text)

    forged = await browser.post("/dashboard/sign-out", data={"csrf": "not-it"})
    assert forged.status_code == 403
    assert (await browser.get("/dashboard")).status_code == 200  # still signed in

    out = await browser.post("/dashboard/sign-out", data={"csrf": token})
    assert out.status_code == 303
    assert out.headers["location"] == "/dashboard/sign-in?why=signed-out"
    assert (await browser.get("/dashboard")).status_code == 303


async def test_a_revoked_key_ends_its_session_at_the_next_page(
    api: Api, browser: httpx.AsyncClient
):
    key, key_id = await _key(api, "analytics:read")
    await _sign_in(browser, key)
    assert (await browser.get("/dashboard/rules")).status_code == 200

    revoked = await api.http.delete(f"/v1/api-keys/{key_id}", headers=auth(ADMIN_KEY))
    assert revoked.status_code in (200, 204), revoked.text

    page = await browser.get("/dashboard/rules")
    assert page.status_code == 303
    assert page.headers["location"] == "/dashboard/sign-in?next=%2Fdashboard%2Frules&why=revoked"
    notice = await browser.get(page.headers["location"])
    assert "was revoked" in notice.text


async def test_a_forged_or_tampered_cookie_is_no_session(api: Api, browser: httpx.AsyncClient):
    await _sign_in(browser, ADMIN_KEY)
    real = browser.cookies.get("sutra_dashboard", path="/dashboard")
    assert real
    browser.cookies.clear()
    browser.cookies.set("sutra_dashboard", real[:-4] + "AAAA", domain="sutra", path="/dashboard")
    assert (await browser.get("/dashboard")).status_code == 303


async def test_pages_answer_bad_input_and_unknown_rules_as_pages(browser: httpx.AsyncClient):
    await _sign_in(browser, ADMIN_KEY)
    bad = await browser.get("/dashboard?from=yesterday")
    assert bad.status_code == 422
    assert "from: not a date" in bad.text
    missing = await browser.get("/dashboard/rules/rule_nope")
    assert missing.status_code == 404
    assert "no rule &#39;rule_nope&#39;" in missing.text
    # The sign-in form never sends a browser off the dashboard.
    form = await browser.get("/dashboard/sign-in?next=//evil.example.com")
    assert 'name="next" value="/dashboard"' in form.text


async def test_the_ledger_pages_25_at_a_time_in_the_apis_order(
    api: Api, browser: httpx.AsyncClient, sessionmaker: async_sessionmaker[AsyncSession]
):
    who = uid("c_ledger")
    start = datetime(2024, 1, 1, tzinfo=UTC)
    async with sessionmaker() as session, session.begin():
        for n in range(30):
            session.add(
                Message(
                    key=f"ledger/{who}/{n}",
                    customer_id=who,
                    channel="whatsapp" if n % 3 == 0 else "email",
                    template="cart_reminder_1",
                    kind="marketing",
                    status="sent",
                    created_at=start + timedelta(minutes=n),
                )
            )
    listed = await api.get(f"/v1/messages?customer_id={who}&limit=50")
    expected = [m["id"] for m in listed.json()["messages"]]
    await _sign_in(browser, ADMIN_KEY)

    first = await browser.get(f"/dashboard/messages?customer_id={who}")
    assert first.status_code == 200
    assert MESSAGE.findall(first.text) == expected[:25]
    [older] = OLDER.findall(first.text)
    second = await browser.get(older.replace("&amp;", "&"))
    assert MESSAGE.findall(second.text) == expected[25:]
    assert not OLDER.findall(second.text)

    whatsapp = await browser.get(f"/dashboard/messages?customer_id={who}&channel=whatsapp")
    assert len(MESSAGE.findall(whatsapp.text)) == 10
    assert whatsapp.text.count('data-label="Channel">WhatsApp<') == 10
