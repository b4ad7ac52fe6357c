"""The rules Sutra installs itself: the abandoned-cart rule, active, and the lifecycle
journeys as drafts. Each validates, names only templates the catalog has, and those render
in every locale on every channel it may use, for the shapes of data lifecycle journeys
give (orders without links, products without a price, no recommendations); installing
them is idempotent and never brings back a rule a marketer archived or changed."""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator
from datetime import time, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from contracts.rules import EVENT_TRIGGERS, TIME_TRIGGERS, RuleDefinition, send_steps
from db.models import Rule, RuleVersion
from services.journeys import rules
from services.journeys.defaults import (
    DEFAULT_ABANDONED_CART,
    DEFAULT_ABANDONED_CART_SLUG,
    LIFECYCLE_DEFAULTS,
)
from services.templating.renderer import Renderer
from services.templating.samples import SAMPLES, sample_context

RENDERER = Renderer()
LOCALES = {"en": "en-PK", "ur": "ur-PK", "hi": "hi-IN"}
ALL_DEFAULTS = {DEFAULT_ABANDONED_CART_SLUG: DEFAULT_ABANDONED_CART, **LIFECYCLE_DEFAULTS}
EXPECTED_SLUGS = {
    "default-welcome",
    "default-post-purchase",
    "default-replenishment",
    "default-win-back",
    "default-birthday",
    "default-purchase-anniversary",
    "default-back-in-stock",
    "default-price-drop",
}


def _definition(slug: str) -> RuleDefinition:
    return RuleDefinition.model_validate(ALL_DEFAULTS[slug])


def _sends(slug: str) -> list[tuple[str, Any]]:
    return send_steps(_definition(slug).steps)


# --- the definitions ------------------------------------------------------------------


def test_the_lifecycle_defaults_are_the_eight_journeys():
    assert set(LIFECYCLE_DEFAULTS) == EXPECTED_SLUGS
    assert DEFAULT_ABANDONED_CART_SLUG not in LIFECYCLE_DEFAULTS
    # still importable where other code and tests take it from
    assert rules.DEFAULT_ABANDONED_CART is DEFAULT_ABANDONED_CART
    assert rules.DEFAULT_ABANDONED_CART_SLUG == DEFAULT_ABANDONED_CART_SLUG


@pytest.mark.parametrize("slug", sorted(ALL_DEFAULTS))
def test_every_default_rule_validates_and_is_documented(slug: str):
    definition = _definition(slug)

    assert slug.startswith("default-")
    assert definition.name.endswith("(default)")
    assert definition.description, "a default rule says what it does"
    assert definition.trigger.event in (*EVENT_TRIGGERS, *TIME_TRIGGERS)
    assert definition.quiet_hours == "default"
    # what is stored is what a marketer would get back and could PUT again
    dumped = definition.model_dump(mode="json", by_alias=True)
    assert RuleDefinition.model_validate(dumped) == definition


@pytest.mark.parametrize("slug", sorted(ALL_DEFAULTS))
def test_every_send_names_a_catalog_template_given_what_it_needs(slug: str):
    for path, send in _sends(slug):
        entry = RENDERER.catalog.get(send.template)
        assert entry is not None, f"{slug} step {path}: no template {send.template!r}"
        assert entry.kind == "marketing"
        if slug in LIFECYCLE_DEFAULTS:  # the cart sequence's 24 h step is WhatsApp first
            assert send.channels[0] == "email", "email first, the others as fallbacks"
        # a coupon is in the context exactly when the step mints one
        assert ("coupon" in entry.context) == (send.incentive is not None), (slug, path)


def test_the_lifecycle_journeys_are_shaped_as_specified():
    def steps(slug: str) -> list[dict[str, Any]]:
        return list(LIFECYCLE_DEFAULTS[slug]["steps"])

    def templates(slug: str) -> list[str]:
        return [send.template for _, send in _sends(slug)]

    welcome = _definition("default-welcome")
    assert welcome.trigger.event == "customer.created"
    assert templates("default-welcome") == ["welcome_1", "welcome_2", "welcome_3"]
    assert [s.get("wait") for s in steps("default-welcome") if "wait" in s] == ["P2D", "P5D"]
    assert steps("default-welcome")[2]["send"]["channels"] == ["email", "whatsapp"]
    assert steps("default-welcome")[4]["send"]["incentive"]["percent_off"] == 10
    assert "order.placed" in welcome.exit.events
    assert welcome.exit.order_scope == "customer"
    assert welcome.reentry.policy == "once"

    post = _definition("default-post-purchase")
    assert post.trigger.event == "order.delivered"
    assert templates("default-post-purchase") == ["thank_you", "review_request", "cross_sell"]
    waits = [s["wait"] for s in steps("default-post-purchase") if "wait" in s]
    assert waits == ["P3D", "P11D"]  # review at +3 days, cross-sell at +14
    assert post.exit.events == ["unsubscribed"], "a new order must not end it"
    assert post.reentry.policy == "every_time"
    assert "recommendations" in RENDERER.catalog["cross_sell"].context

    replenish = _definition("default-replenishment")
    assert replenish.trigger.event == "replenishment_due"
    assert steps("default-replenishment")[0] == {"wait_until": "10:00"}
    assert templates("default-replenishment") == ["replenish_reminder"]
    assert "order.placed" not in replenish.exit.events  # the workflow watches its SKU
    assert replenish.reentry.policy == "every_time"

    win_back = _definition("default-win-back")
    assert win_back.trigger.event == "inactivity"
    assert win_back.trigger.after == timedelta(days=90)
    assert templates("default-win-back") == ["winback_1", "winback_2"]
    offers = [
        s["send"]["incentive"]["percent_off"] for s in steps("default-win-back") if "send" in s
    ]
    assert offers == [10, 15]
    assert [s["wait"] for s in steps("default-win-back") if "wait" in s] == ["P7D"]
    assert "order.placed" in win_back.exit.events
    assert win_back.exit.order_scope == "customer"

    birthday = _definition("default-birthday")
    assert (birthday.trigger.event, birthday.trigger.at) == ("birthday", time(10, 0))
    assert steps("default-birthday")[0]["send"]["incentive"]["percent_off"] == 15
    assert birthday.reentry.policy == "every_time"

    anniversary = _definition("default-purchase-anniversary")
    assert (anniversary.trigger.event, anniversary.trigger.at) == (
        "purchase_anniversary",
        time(10, 0),
    )
    assert templates("default-purchase-anniversary") == ["anniversary"]

    back = _definition("default-back-in-stock")
    assert back.trigger.event == "product.back_in_stock"
    assert steps("default-back-in-stock")[0]["send"]["channels"] == ["email", "sms"]
    assert back.reentry.policy == "every_time"

    drop = _definition("default-price-drop")
    assert drop.trigger.event == "product.price_dropped"
    assert templates("default-price-drop") == ["price_drop"]
    assert (drop.reentry.policy, drop.reentry.period) == ("once_per", timedelta(days=7))


# --- their templates, for the data lifecycle journeys give ----------------------------

_ORDER: dict[str, Any] = {
    "id": "ord_life",
    "currency": "PKR",
    "total": "9000.00",
    "items": [{"sku": "SKU1", "name": "Lawn suit", "quantity": 2, "unit_price": "4500.00"}],
}
_PRICE_DROP = {
    "sku": "SKU9",
    "name": "Embroidered shawl",
    "url": "https://shop.example.com/p/sku9",
    "image_url": "https://shop.example.com/i/sku9.jpg",
    "old_price": "3200.00",
    "new_price": "2800.00",
    "currency": "PKR",
}
# What each may be given; every variant must render.
SHAPES: dict[str, dict[str, Any]] = {
    "sample": {},
    "lifecycle": {
        "order": _ORDER,
        "product": _PRICE_DROP,
        "recommendations": [
            {"sku": "SKU7", "name": "Silk dupatta"},
            {"sku": "SKU8", "name": "Kurta"},
        ],
    },
    "bare": {
        "order": {**_ORDER, "items": [{**_ORDER["items"][0], "url": None}]},
        "product": {"sku": "SKU9", "name": None, "url": None, "image_url": None},
        "recommendations": [],
    },
    # what a replenishment sweep knows of a product; no recommendations given at all
    "minimal": {
        "product": {"sku": "SKU9", "name": "Green tea", "quantity": 2},
        "recommendations": None,
    },
}
CASES = sorted(
    {
        (send.template, tuple(send.channels))
        for slug in ALL_DEFAULTS
        for _, send in send_steps(_definition(slug).steps)
    }
)


def _context(name: str, shape: str) -> dict[str, Any]:
    entry = RENDERER.catalog[name]
    context = copy.deepcopy(sample_context(entry.context))
    for key, value in SHAPES[shape].items():
        if value is None:
            context.pop(key, None)
        elif key in entry.context:
            context[key] = value
    return context


@pytest.mark.parametrize("shape", sorted(SHAPES))
@pytest.mark.parametrize("locale", sorted(LOCALES))
@pytest.mark.parametrize(("name", "channels"), CASES)
def test_default_rule_templates_render_in_every_locale_for_every_shape(
    name: str, channels: tuple[str, ...], locale: str, shape: str
):
    context = _context(name, shape)
    for channel in ("email", "sms", "whatsapp"):
        out = RENDERER.render(name, channel, LOCALES[locale], context)

        assert out.locale == locale
        for part in (out.subject, out.text, out.html):
            if part is not None:
                assert "None" not in part, (name, channel, part)
                assert "{{" not in part, (name, channel, part)
        if channel == "email":
            assert out.subject
            assert SAMPLES["unsubscribe_url"] in out.text
        else:
            assert "STOP" in out.text
        if channel == "sms" and locale == "en":
            assert len(out.text) <= 160, f"{name}: {len(out.text)} characters, two segments"


def test_empty_recommendations_read_sensibly():
    for name in ("cross_sell", "winback_1", "winback_2"):
        out = RENDERER.render(name, "email", "en-PK", _context(name, "bare"))
        assert "Silk dupatta" not in out.text
        assert "Picked for you" not in out.text
        assert "You might like" not in out.text
        assert SAMPLES["shop"]["url"] in out.text

    full = RENDERER.render("cross_sell", "email", "en-PK", _context("cross_sell", "lifecycle"))
    assert "- Silk dupatta\n- Kurta\n" in full.text
    assert "Silk dupatta" in (full.html or "")


def test_price_drop_shows_the_new_and_the_old_price():
    context = _context("price_drop", "lifecycle")
    for channel in ("email", "sms", "whatsapp"):
        out = RENDERER.render("price_drop", channel, "en-PK", context)
        assert "2,800.00" in out.text, (channel, out.text)
        assert "3,200.00" in out.text, (channel, out.text)

    bare = RENDERER.render("back_in_stock", "sms", "en-PK", _context("back_in_stock", "bare"))
    assert bare.text.startswith(SAMPLES["shop"]["name"])
    assert SAMPLES["shop"]["url"] in bare.text  # no product link: the shop's


def test_thank_you_lists_the_order():
    out = RENDERER.render("thank_you", "email", "en-PK", _context("thank_you", "lifecycle"))
    assert "Lawn suit x 2" in out.text
    assert "9,000.00" in out.text


# --- installing them ------------------------------------------------------------------


@pytest.fixture
async def session(sessionmaker: async_sessionmaker[AsyncSession]) -> AsyncIterator[AsyncSession]:
    """A session whose work is rolled back, on a database where no default rule was
    installed yet (rules other tests installed are hidden inside the transaction)."""
    async with sessionmaker() as session:
        try:
            await session.execute(update(Rule).where(Rule.slug.like("default-%")).values(slug=None))
            yield session
        finally:
            await session.rollback()


async def _defaults(session: AsyncSession) -> dict[str, Rule]:
    rows = await session.scalars(select(Rule).where(Rule.slug.like("default-%")))
    return {rule.slug: rule for rule in rows if rule.slug}


async def _rule_count(session: AsyncSession) -> int:
    return int(await session.scalar(select(func.count()).select_from(Rule)) or 0)


async def test_installs_the_abandoned_cart_rule_active_and_the_lifecycle_rules_as_drafts(
    session: AsyncSession,
):
    installed = await rules.ensure_default_rules(session)

    assert installed is not None
    assert installed.slug == DEFAULT_ABANDONED_CART_SLUG
    assert installed.status == "active"
    found = await _defaults(session)
    assert set(found) == {DEFAULT_ABANDONED_CART_SLUG, *EXPECTED_SLUGS}
    for slug, rule in found.items():
        assert rule.status == ("active" if slug == DEFAULT_ABANDONED_CART_SLUG else "draft")
        assert rule.version == 1
        assert rule.trigger_event == _definition(slug).trigger.event
        version = await session.get(RuleVersion, (rule.id, 1))
        assert version is not None
        assert RuleDefinition.model_validate(version.definition) == _definition(slug)
    trail = await rules.audit_trail(session, found["default-welcome"].id)
    assert [a.action for a in trail] == ["created"]
    assert trail[0].actor == "sutra (default rules)"


async def test_installing_twice_changes_nothing(session: AsyncSession):
    await rules.ensure_default_rules(session)
    count = await _rule_count(session)

    assert await rules.ensure_default_rules(session) is None
    assert await _rule_count(session) == count


async def test_never_reinstalls_a_rule_a_marketer_archived_or_changed(session: AsyncSession):
    await rules.ensure_default_rules(session)
    found = await _defaults(session)
    marketer = rules.Actor(key_id=None, name="marketer")
    await rules.transition(session, found["default-price-drop"].id, "archived", marketer)
    await rules.transition(session, found[DEFAULT_ABANDONED_CART_SLUG].id, "paused", marketer)
    edited = copy.deepcopy(LIFECYCLE_DEFAULTS["default-welcome"])
    edited["name"] = "Welcome (ours)"
    await rules.update(
        session, found["default-welcome"].id, RuleDefinition.model_validate(edited), marketer
    )
    count = await _rule_count(session)

    assert await rules.ensure_default_rules(session) is None

    assert await _rule_count(session) == count
    after = await _defaults(session)
    assert after["default-price-drop"].status == "archived"
    assert after[DEFAULT_ABANDONED_CART_SLUG].status == "paused"
    assert (after["default-welcome"].name, after["default-welcome"].version) == (
        "Welcome (ours)",
        2,
    )


async def test_an_existing_install_gets_the_lifecycle_drafts_and_keeps_its_cart_rule(
    session: AsyncSession,
):
    """An installation from before the lifecycle defaults: only the new ones arrive."""
    cart_rule, _ = await rules.create(
        session,
        RuleDefinition.model_validate(DEFAULT_ABANDONED_CART),
        rules.Actor(key_id=None, name="sutra (default rules)"),
        slug=DEFAULT_ABANDONED_CART_SLUG,
        status="active",
    )
    await rules.transition(
        session, cart_rule.id, "paused", rules.Actor(key_id=None, name="marketer")
    )

    assert await rules.ensure_default_rules(session) is None

    found = await _defaults(session)
    assert set(found) == {DEFAULT_ABANDONED_CART_SLUG, *EXPECTED_SLUGS}
    assert found[DEFAULT_ABANDONED_CART_SLUG].id == cart_rule.id
    assert found[DEFAULT_ABANDONED_CART_SLUG].status == "paused"
    assert all(found[slug].status == "draft" for slug in EXPECTED_SLUGS)


async def test_rules_are_listed_in_install_order_the_cart_rule_first(session: AsyncSession):
    """README's tour tests the first rule GET /v1/rules lists: the abandoned-cart one."""
    await rules.ensure_default_rules(session)

    listed = [rule.slug for rule in await rules.list_rules(session) if rule.slug]

    assert listed == [DEFAULT_ABANDONED_CART_SLUG, *LIFECYCLE_DEFAULTS]
