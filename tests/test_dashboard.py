"""The dashboard's sign-in, session and scopes over plain HTTP (the real app, in-process):
what the cookie carries and how it is flagged, CSRF on both forms, the page a key without
the scope gets, and a revoked key's session ending at its next page. And, over a known
history (tests/dashboard_seed.py, in August 2023), the rule page's per-step figures and
holdout lift and the payments page's figures by payment type and worst places: each cell
what the endpoint the page stands for answers for the same period."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from config.settings import Settings
from dashboard.formatting import Formats
from db.models import Message
from services.analytics.period import shop_zone
from tests.conftest import ADMIN_KEY, Api, auth, make_settings, start_api
from tests.dashboard_html import parse
from tests.dashboard_seed import AUGUST, AUGUST_PERIOD, Seeded, seed
from tests.factories import uid

CSRF = re.compile(r'name="csrf" value="([^"]+)"')
MESSAGE = re.compile(r'<tr data-message="([^"]+)"')
OLDER = re.compile(r'rel="next" href="([^"]+)"')
QUERY = f"from={AUGUST_PERIOD['from']}&to={AUGUST_PERIOD['to']}"


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


# --- figures over a known history ------------------------------------------------------


@pytest.fixture(scope="module")
def seeded_once() -> dict[str, Seeded]:
    return {}


@pytest.fixture
async def august(
    browser: httpx.AsyncClient,
    sessionmaker: async_sessionmaker[AsyncSession],
    seeded_once: dict[str, Seeded],
) -> Seeded:
    """The seeded August (once a run: its shop-wide figures are the seed's), and the
    browser signed in."""
    if not seeded_once:
        seeded_once["august"] = await seed(sessionmaker, uid("c_dash"), at=AUGUST)
    await _sign_in(browser, ADMIN_KEY)
    return seeded_once["august"]


def _formats(api: Api) -> Formats:
    settings: Settings = api.app.state.settings
    return Formats(settings.shop_locale, shop_zone(settings))


def _money(f: Formats, amounts: dict[str, str]) -> str:
    return "".join(f.money(amount, currency) for currency, amount in amounts.items()) or "\u2013"


def _rate(value: float | None) -> str:
    return "" if value is None else str(value)


STATUSES = ("sent", "delivered", "opened", "clicked", "bounced", "failed")


async def test_the_rule_page_shows_the_apis_figures_per_step_and_channel(
    api: Api, browser: httpx.AsyncClient, august: Seeded
):
    f = _formats(api)
    for rule_id in (august.rule_id, august.lift_rule_id):
        answer = await api.get(f"/v1/analytics/rules/{rule_id}?{QUERY}")
        assert answer.status_code == 200, answer.text
        page = parse(await browser.get(f"/dashboard/rules/{rule_id}?{QUERY}"))
        table = page.one("table", id="steps-table")
        expected = [
            (version["version"], variant["variant"] or "", step["step"] or "", channel, counts)
            for version in answer.json()["versions"]
            for variant in version["variants"]
            for step in variant["steps"]
            for channel, counts in step["channels"].items()
        ]
        shown = [r for r in table.find_all("tr") if "data-step" in r.attrs]
        assert len(shown) == len(expected) > 0, rule_id
        for version, variant, step, channel, counts in expected:
            row = table.one(
                "tr",
                data_version=str(version),
                data_variant=variant,
                data_step=step,
                data_channel=channel,
            )
            for status in STATUSES:
                assert row.figure(status) == (str(counts[status]), f.number(counts[status]))
            held_back = sum(counts["suppressed"].values())
            assert row.figure("suppressed") == (str(held_back), f.number(held_back))
            for reason, n in counts["suppressed"].items():
                if n:
                    assert row.figure(f"suppressed-{reason}") == (str(n), f.number(n))
                else:
                    assert not row.find_all(data_figure=f"suppressed-{reason}")

    # What the seed wrote, so that the comparison above compared something.
    cart = parse(await browser.get(f"/dashboard/rules/{august.rule_id}?{QUERY}"))
    a = cart.one("tr", data_step="0.a.0", data_channel="email")
    assert [a.figure(s)[0] for s in STATUSES] == ["4", "3", "2", "1", "1", "0"]
    assert "cart_reminder_1" in a.one("th").text()
    b = cart.one("tr", data_step="0.b.0", data_channel="sms")
    assert [b.figure(s)[0] for s in STATUSES] == ["2", "1", "0", "0", "0", "0"]
    welcome = parse(await browser.get(f"/dashboard/rules/{august.lift_rule_id}?{QUERY}"))
    nowhere = welcome.one("tr", data_step="0", data_channel="none")
    assert nowhere.figure("suppressed-consent") == ("2", "2")
    assert nowhere.one("td", data_label="Channel").text() == "No channel"
    capped = welcome.one("tr", data_step="0", data_channel="email")
    assert capped.figure("sent")[0] == "0"
    assert capped.figure("suppressed-frequency_cap") == ("1", "1")


async def test_the_rule_page_shows_the_apis_holdout_lift(
    api: Api, browser: httpx.AsyncClient, august: Seeded
):
    f = _formats(api)
    answer = await api.get(f"/v1/analytics/rules/{august.lift_rule_id}/lift?{QUERY}")
    assert answer.status_code == 200, answer.text
    [lift] = answer.json()["versions"]
    assert lift["status"] == "measured"
    assert (lift["treated"]["conversion_rate"], lift["held_out"]["conversion_rate"]) == (
        0.35,
        0.15,
    )
    assert lift["incremental_revenue"] == {"PKR": "16000.00"}

    page = parse(await browser.get(f"/dashboard/rules/{august.lift_rule_id}?{QUERY}"))
    row = page.one("table", id="lift-table").one("tr", data_version="1")
    assert row.attrs["data-status"] == "measured"
    for group in ("treated", "held_out"):
        figures = lift[group]
        rate = figures["conversion_rate"]
        assert row.figure(f"{group}_rate") == (_rate(rate), f.percent(rate))
        for name in ("journeys", "conversions"):
            assert row.figure(f"{group}_{name}") == (str(figures[name]), f.number(figures[name]))
    assert row.figure("absolute_lift") == (
        _rate(lift["absolute_lift"]),
        f.points(lift["absolute_lift"]),
    )
    assert row.figure("relative_lift") == (
        _rate(lift["relative_lift"]),
        f.percent(lift["relative_lift"], signed=True),
    )
    for end in ("low", "high"):
        low_high = lift["absolute_lift_ci"][end]
        assert row.figure(f"absolute_lift_{end}") == (_rate(low_high), f.points(low_high))
        relative = lift["relative_lift_ci"][end]
        assert row.figure(f"relative_lift_{end}") == (
            _rate(relative),
            f.percent(relative, signed=True),
        )
    assert row.figure("incremental_revenue")[1] == _money(f, lift["incremental_revenue"])
    assert row.figure("absolute_lift")[1] == "+20.0\u00a0pts"

    # Over a month none of its journeys entered in, the section stays and says so.
    july = "from=2023-07-01&to=2023-07-31"
    none = await api.get(f"/v1/analytics/rules/{august.lift_rule_id}/lift?{july}")
    assert none.json()["versions"] == []
    quiet = parse(await browser.get(f"/dashboard/rules/{august.lift_rule_id}?{july}"))
    section = quiet.one("section", id="lift")
    assert not section.find_all("table")
    assert "No journey entered this rule in this period." in section.text()

    # A rule without a holdout has no lift section.
    cart = parse(await browser.get(f"/dashboard/rules/{august.rule_id}?{QUERY}"))
    assert not cart.find_all(id="lift")


async def test_the_payments_page_shows_the_apis_figures_by_type_and_worst_places(
    api: Api, browser: httpx.AsyncClient, august: Seeded
):
    f = _formats(api)
    answer = await api.get(f"/v1/analytics/payments?{QUERY}")
    assert answer.status_code == 200, answer.text
    body = answer.json()
    page = parse(await browser.get(f"/dashboard/payments?{QUERY}"))

    table = page.one("table", id="payment-types-table")
    assert [r.attrs["data-payment-type"] for r in table.find_all("tr") if r.attrs] == [
        t["payment_type"] for t in body["payment_types"]
    ]
    for kind in body["payment_types"]:
        row = table.one("tr", data_payment_type=kind["payment_type"])
        for name in ("orders", "cancelled", "delivered", "rto"):
            assert row.figure(name) == (str(kind[name]), f.number(kind[name]))
        for name in ("cancellation_rate", "rto_rate"):
            assert row.figure(name) == (_rate(kind[name]), f.percent(kind[name]))
        for name in ("revenue", "net_revenue"):
            assert row.figure(name)[1] == _money(f, kind[name])
    for section, key in (("rto_by_city", "city"), ("rto_by_postal_code", "postal_code")):
        places = page.one("table", id=f"rto-by-{key}")
        rows = [r for r in places.find_all("tr") if "data-place" in r.attrs]
        assert [r.attrs["data-place"] for r in rows] == [p["place"] for p in body[section]]
        for place, row in zip(body[section], rows, strict=True):
            for name in ("delivered_or_rto", "rto"):
                assert row.figure(name) == (str(place[name]), f.number(place[name]))
            assert row.figure("rto_rate") == (str(place["rto_rate"]), f.percent(place["rto_rate"]))

    # What the seed wrote: COD returns most; Islamabad has too few parcels to rank.
    cod = table.one("tr", data_payment_type="cod")
    assert cod.figure("rto_rate")[1] == f.percent(9 / 21)
    assert cod.figure("revenue")[1] == "PKR\u00a021,000.00"
    assert [p["place"] for p in body["rto_by_city"]] == ["Karachi", "Lahore"]
    assert [p["place"] for p in body["rto_by_postal_code"]] == ["74000", "54000"]
    # And what the page showed before: the payment links' collection.
    upfront = page.one("article", data_purpose="upfront")
    assert upfront.figure("paid_rate") == ("0.5", "50.0%")
