"""The dashboard in a real headless Chromium (Debian's ``chromium`` and ``chromium-driver``,
driven by selenium): sign in through the form, open every page over a known history, and
find on each the figures the API answers with. Screenshots of every page, at desktop and
phone widths, go to tests/artifacts/dashboard/.

Without a browser these tests are skipped, saying what to install."""

from __future__ import annotations

import base64
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api.app import create_app
from config.settings import Settings
from dashboard.formatting import Formats
from services.analytics.period import shop_zone
from tests.conftest import ADMIN_KEY, auth
from tests.dashboard_seed import PERIOD, Seeded, events, seed
from tests.factories import uid

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
ARTIFACTS = Path(__file__).resolve().parent / "artifacts" / "dashboard"
MISSING = (
    "the dashboard's browser tests need Debian's chromium and chromium-driver "
    f"(found chromium: {CHROMIUM or 'no'}, chromedriver: {CHROMEDRIVER or 'no'}); "
    "install them with: apt-get install chromium chromium-driver"
)
pytestmark = pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER), reason=MISSING)
DESKTOP, PHONE = 1280, 390
QUERY = f"from={PERIOD['from']}&to={PERIOD['to']}"


class Server:
    """The app under uvicorn in a thread, on a free port: the browser needs a real socket."""

    def __init__(self, settings: Settings) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = int(sock.getsockname()[1])
        config = uvicorn.Config(
            create_app(settings), host="127.0.0.1", port=self.port, log_level="warning"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="dashboard", daemon=True)
        self.url = f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> Server:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert self.thread.is_alive(), "the API did not start"
            assert time.monotonic() < deadline, "the API did not start in 30 s"
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


@pytest.fixture
def server(settings: Settings) -> Iterator[Server]:
    with Server(settings) as running:
        yield running


@pytest.fixture
def browser() -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = str(CHROMIUM)
    for arg in (
        "--headless=new",
        "--no-sandbox",  # root in CI
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--lang=en",
        f"--window-size={DESKTOP},900",
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.implicitly_wait(5)
    try:
        yield driver
    finally:
        driver.quit()


def screenshot(driver: Any, name: str) -> None:
    """The whole page at desktop and phone widths."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for label, width, mobile in (("desktop", DESKTOP, False), ("phone", PHONE, True)):
        metrics = {"width": width, "height": 900, "deviceScaleFactor": 1, "mobile": mobile}
        driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)
        time.sleep(0.3)  # the charts redraw at the new width
        height = driver.execute_script("return document.documentElement.scrollHeight")
        driver.execute_cdp_cmd(
            "Emulation.setDeviceMetricsOverride", {**metrics, "height": min(int(height), 6000)}
        )
        time.sleep(0.3)
        shot = driver.execute_cdp_cmd("Page.captureScreenshot", {"format": "png"})
        (ARTIFACTS / f"{name}-{label}.png").write_bytes(base64.b64decode(shot["data"]))
    driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})


def figure(driver: Any, name: str, within: Any = None) -> tuple[str, str]:
    """A figure's value as written (data-value) and as shown."""
    from selenium.webdriver.common.by import By

    element = (within or driver).find_element(By.CSS_SELECTOR, f'[data-figure="{name}"]')
    return element.get_attribute("data-value") or "", element.text.strip()


def sign_in(driver: Any, base: str, key: str) -> None:
    from selenium.webdriver.common.by import By

    driver.get(f"{base}/dashboard")
    assert "/dashboard/sign-in" in driver.current_url
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    driver.find_element(By.ID, "key").send_keys(key)
    form = driver.find_element(By.CSS_SELECTOR, "form.stack")
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    # The form is gone once the browser has loaded the page the sign-in led to.
    WebDriverWait(driver, 10).until(expected_conditions.staleness_of(form))


def _api(server: Server, path: str) -> Any:
    answer = httpx.get(f"{server.url}{path}", headers=auth(ADMIN_KEY), timeout=10)
    assert answer.status_code == 200, answer.text
    return answer.json()


def _journeys(server: Server, customer_id: str) -> list[dict[str, Any]]:
    """The customer's journeys once Temporal's visibility lists them."""
    deadline = time.monotonic() + 30
    while True:
        found: list[dict[str, Any]] = _api(server, f"/v1/customers/{customer_id}/journeys")[
            "journeys"
        ]
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.3)


async def _seeded(server: Server, sessionmaker: async_sessionmaker[AsyncSession]) -> Seeded:
    seeded = await seed(sessionmaker, uid("c_dash"))
    async with httpx.AsyncClient(base_url=server.url, headers=auth(ADMIN_KEY)) as http:
        for event in events(seeded):
            posted = await http.post("/v1/events", json=event)
            assert posted.status_code == 202, posted.text
    return seeded


class Shown(Formats):
    """The page's formats as a browser reads them: a no-break space is a space."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings.shop_locale, shop_zone(settings))

    def money(self, amount: Any, currency: str) -> str:
        return super().money(amount, currency).replace("\xa0", " ")

    def duration(self, seconds: float | None) -> str:
        return super().duration(seconds).replace("\xa0", " ")

    def points(self, value: float | None, digits: int = 1) -> str:
        return super().points(value, digits).replace("\xa0", " ")


async def test_every_page_shows_the_figures_the_api_answers_with(
    server: Server,
    browser: Any,
    settings: Settings,
    sessionmaker: async_sessionmaker[AsyncSession],
):
    from selenium.webdriver.common.by import By

    data = await _seeded(server, sessionmaker)
    f = Shown(settings)
    base = server.url
    sign_in(browser, base, ADMIN_KEY)
    assert browser.current_url == f"{base}/dashboard"

    # Overview, over the seeded June: the seeded figures, and GET /v1/analytics/overview's.
    api_overview = _api(server, f"/v1/analytics/overview?{QUERY}")
    assert api_overview["revenue"]["attributed_revenue"] == {"PKR": "16500.00"}
    assert api_overview["revenue"]["order_revenue"] == {"PKR": "20000.00"}
    assert api_overview["carts"]["recovered"] == 3
    assert (
        api_overview["deliverability"]["email"]["sent"]
        + api_overview["deliverability"]["sms"]["sent"]
        + api_overview["deliverability"]["whatsapp"]["sent"]
        == 6
    )
    browser.get(f"{base}/dashboard?{QUERY}")
    assert figure(browser, "attributed-PKR") == ("16500.00", f.money(data.attributed, "PKR"))
    assert figure(browser, "shop-PKR") == ("20000.00", "PKR 20,000.00")
    assert figure(browser, "share-PKR")[1] == "82.5%"
    assert figure(browser, "attributed-orders") == ("3", "3")
    assert figure(browser, "shop-orders") == ("4", "4")
    assert figure(browser, "carts-abandoned") == ("6", "6")
    assert figure(browser, "carts-recovered") == ("3", "3")
    assert figure(browser, "recovery-rate")[1] == "50.0%"
    assert figure(browser, "sent") == ("6", "6")
    assert figure(browser, "bounce-rate")[1] == f.percent(1 / 6)
    assert browser.find_element(By.CSS_SELECTOR, "canvas#revenue").size["height"] > 100
    screenshot(browser, "overview")

    # Rules: the list and the rule's page carry the API's figures.
    api_rule = _api(server, f"/v1/analytics/rules/{data.rule_id}?{QUERY}")
    variants = api_rule["versions"][0]["variants"]
    entered = sum(v["entered"] for v in variants)
    conversions = sum(v["conversions"] for v in variants)
    browser.get(f"{base}/dashboard/rules?{QUERY}")
    row = browser.find_element(By.CSS_SELECTOR, f'tr[data-rule="{data.rule_id}"]')
    assert row.find_element(By.CSS_SELECTOR, '[data-figure="entered"]').text == str(entered)
    assert row.find_element(By.CSS_SELECTOR, '[data-figure="conversions"]').text == "3"
    assert "PKR 16,500.00" in row.find_element(By.CSS_SELECTOR, '[data-figure="revenue"]').text
    screenshot(browser, "rules")

    browser.get(f"{base}/dashboard/rules/{data.rule_id}?{QUERY}")
    assert figure(browser, "entered") == (str(entered), f.number(entered))
    assert figure(browser, "conversions") == (str(conversions), f.number(conversions))
    assert figure(browser, "conversion_rate")[1] == f.percent(conversions / entered)
    [experiment] = api_rule["experiments"]
    shown = browser.find_element(By.CSS_SELECTOR, "[data-experiment='1-0']")
    assert figure(browser, "verdict", shown)[1] == experiment["verdict"]
    for variant in experiment["variants"]:
        cells = shown.find_element(By.CSS_SELECTOR, f'tr[data-variant="{variant["name"]}"]')
        assert figure(browser, "journeys", cells)[1] == f.number(variant["journeys"])
        assert figure(browser, "conversions", cells)[1] == f.number(variant["conversions"])
        assert figure(browser, "conversion_rate", cells)[1] == f.percent(variant["conversion_rate"])
    table = browser.find_element(By.ID, "variants-table")
    for variant in variants:
        cells = table.find_element(By.CSS_SELECTOR, f'tr[data-variant="{variant["variant"]}"]')
        assert figure(browser, "entered", cells)[1] == f.number(variant["entered"])
    steps = browser.find_element(By.ID, "steps-table")
    for variant in variants:
        for step in variant["steps"]:
            for channel, counts in step["channels"].items():
                cells = steps.find_element(
                    By.CSS_SELECTOR, f'tr[data-step="{step["step"]}"][data-channel="{channel}"]'
                )
                for status in ("sent", "delivered", "opened", "clicked", "bounced", "failed"):
                    assert figure(browser, status, cells)[1] == f.number(counts[status])
    screenshot(browser, "rule")

    # The welcome rule: its holdout lift, as GET /v1/analytics/rules/{id}/lift answers.
    [lift] = _api(server, f"/v1/analytics/rules/{data.lift_rule_id}/lift?{QUERY}")["versions"]
    browser.get(f"{base}/dashboard/rules/{data.lift_rule_id}?{QUERY}")
    cells = browser.find_element(By.CSS_SELECTOR, '#lift-table tr[data-version="1"]')
    for group in ("treated", "held_out"):
        rate = lift[group]["conversion_rate"]
        assert figure(browser, f"{group}_rate", cells)[1] == f.percent(rate)
    assert figure(browser, "absolute_lift", cells)[1] == f.points(lift["absolute_lift"])
    for end in ("low", "high"):
        shown_end = figure(browser, f"absolute_lift_{end}", cells)[1]
        assert shown_end == f.points(lift["absolute_lift_ci"][end])
    assert figure(browser, "incremental_revenue", cells)[1] == f.money(
        lift["incremental_revenue"]["PKR"], "PKR"
    )
    held_back = browser.find_element(By.CSS_SELECTOR, '#steps-table tr[data-channel="none"]')
    assert figure(browser, "suppressed-consent", held_back)[1] == "2"
    screenshot(browser, "rule-lift")

    # Payments, from the payment ledger.
    browser.get(f"{base}/dashboard/payments?{QUERY}")
    upfront = browser.find_element(By.CSS_SELECTOR, '[data-purpose="upfront"]')
    assert figure(browser, "paid_rate", upfront) == ("0.5", "50.0%")
    assert Decimal(figure(browser, "median", upfront)[0]) == 1800
    assert figure(browser, "collected", upfront)[1] == "PKR 450.00"
    prepaid = browser.find_element(By.CSS_SELECTOR, '[data-purpose="prepaid"]')
    assert figure(browser, "paid_rate", prepaid)[1] == "100.0%"
    assert figure(browser, "median", prepaid)[1] == f.duration(7200)
    # And GET /v1/analytics/payments' figures: by payment type, and the worst places.
    api_payments = _api(server, f"/v1/analytics/payments?{QUERY}")
    for kind in api_payments["payment_types"]:
        cells = browser.find_element(
            By.CSS_SELECTOR, f'tr[data-payment-type="{kind["payment_type"]}"]'
        )
        assert figure(browser, "orders", cells)[1] == f.number(kind["orders"])
        assert figure(browser, "rto_rate", cells)[1] == f.percent(kind["rto_rate"])
    cities = browser.find_elements(By.CSS_SELECTOR, "#rto-by-city tr[data-place]")
    assert [c.get_attribute("data-place") for c in cities] == [
        p["place"] for p in api_payments["rto_by_city"]
    ]
    for place, cells in zip(api_payments["rto_by_city"], cities, strict=True):
        assert figure(browser, "rto_rate", cells)[1] == f.percent(place["rto_rate"])
    assert browser.find_element(By.CSS_SELECTOR, "canvas#rto").size["height"] > 100
    screenshot(browser, "payments")

    # The customer's journeys, as GET /v1/customers/{id}/journeys lists them.
    journeys = _journeys(server, data.customer_id)
    assert journeys, "the customer's cart workflow never appeared in Temporal's visibility"
    browser.get(f"{base}/dashboard/customers")
    browser.find_element(By.ID, "customer-id").send_keys(data.customer_id)
    browser.find_element(By.CSS_SELECTOR, "form.inline-form button").click()
    rows = browser.find_elements(By.CSS_SELECTOR, "#journeys-table tbody tr")
    assert [r.get_attribute("data-workflow") for r in rows] == [j["workflow_id"] for j in journeys]
    link = rows[0].find_element(By.CSS_SELECTOR, "th a").get_attribute("href")
    assert link.startswith(f"{settings.temporal_ui_url}/namespaces/default/workflows/")
    screenshot(browser, "journeys")

    # Messages: the ledger, filtered as the API filters it.
    for query in (f"customer_id={data.customer_id}", f"rule_id={data.rule_id}&status=bounced"):
        ledger = _api(server, f"/v1/messages?{query}")["messages"]
        browser.get(f"{base}/dashboard/messages?{query}")
        shown_ids = [
            r.get_attribute("data-message")
            for r in browser.find_elements(By.CSS_SELECTOR, "#messages-table tbody tr")
        ]
        assert shown_ids == [m["id"] for m in ledger], query
    browser.get(f"{base}/dashboard/messages?rule_id={data.rule_id}&channel=sms")
    channels = browser.find_elements(By.CSS_SELECTOR, "#messages-table tbody td:nth-child(3)")
    assert [c.text for c in channels] == ["SMS", "SMS"]
    browser.get(f"{base}/dashboard/messages?rule_id={data.rule_id}")
    screenshot(browser, "messages")

    # Signing out ends the session.
    browser.find_element(By.CSS_SELECTOR, "form.sign-out button").click()
    assert "You are signed out." in browser.find_element(By.CSS_SELECTOR, ".notice").text
    screenshot(browser, "sign-in")
    browser.get(f"{base}/dashboard/rules?{QUERY}")
    assert "/dashboard/sign-in" in browser.current_url


async def test_a_key_without_the_scope_sees_which_scope_it_needs(server: Server, browser: Any):
    from selenium.webdriver.common.by import By

    async with httpx.AsyncClient(base_url=server.url, headers=auth(ADMIN_KEY)) as http:
        created = await http.post(
            "/v1/api-keys", json={"name": "Rules editor", "scopes": ["rules:read", "rules:write"]}
        )
    assert created.status_code == 201, created.text
    sign_in(browser, server.url, created.json()["key"])

    detail = browser.find_element(By.ID, "forbidden-detail").text
    assert "Rules editor" in detail
    assert "analytics:read" in detail
    screenshot(browser, "forbidden")
    browser.get(f"{server.url}/dashboard")
    assert "/dashboard/sign-in" in browser.current_url
