"""Every shipped template renders in English, Urdu and Hindi on every channel, with the
sample data its catalog entry promises, and reads like a message (no raw values)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from babel.numbers import format_currency

from services.templating.catalogue import PARTS, TEMPLATES_DIR
from services.templating.filters import format_locale
from services.templating.renderer import Renderer
from services.templating.samples import SAMPLES, sample_context

RENDERER = Renderer()
LOCALES = ("en", "ur", "hi")
CASES = [
    (name, channel, locale)
    for name in sorted(RENDERER.catalog)
    for channel in ("email", "sms", "whatsapp")
    for locale in LOCALES
]
# The customer's locale: the region decides how money is written.
REQUESTED = {"en": "en-PK", "ur": "ur-PK", "hi": "hi-IN"}
LEAKS = re.compile(r"None|\{\{|\{%|\d{4}-\d{2}-\d{2}T")


def _render(name: str, channel: str, locale: str):
    entry = RENDERER.catalog[name]
    return RENDERER.render(name, channel, REQUESTED[locale], sample_context(entry.context))  # type: ignore[arg-type]


@pytest.mark.parametrize(("name", "channel", "locale"), CASES)
def test_every_template_renders_in_every_locale_and_channel(name: str, channel: str, locale: str):
    entry = RENDERER.catalog[name]

    out = _render(name, channel, locale)

    assert out.locale == locale, "fell back to another locale: a file is missing"
    for part in (out.subject, out.text, out.html):
        if part is not None:
            assert not LEAKS.search(part), f"raw value leaked into {name}: {LEAKS.search(part)}"
    if channel == "email":
        assert out.subject
        assert "\n" not in out.subject
        assert out.html is not None
        assert f'dir="{"rtl" if locale == "ur" else "ltr"}"' in out.html
        unsubscribe = SAMPLES["unsubscribe_url"]
        if entry.kind == "marketing":
            assert unsubscribe in out.html
            assert unsubscribe in out.text
        else:
            assert unsubscribe not in out.html
            assert unsubscribe not in out.text
    elif entry.kind == "marketing":
        assert "STOP" in out.text, "marketing SMS/WhatsApp must say how to opt out"


@pytest.mark.parametrize(
    ("name", "locale"), [(n, loc) for n in sorted(RENDERER.catalog) for loc in LOCALES]
)
def test_sms_fit_in_few_segments(name: str, locale: str):
    text = _render(name, "sms", locale).text

    assert text.startswith(SAMPLES["shop"]["name"])
    if locale == "en":
        assert len(text) <= 160, f"{len(text)} characters: two SMS segments"
    else:
        assert len(text) <= 201, f"{len(text)} characters: more than three UCS-2 segments"


# The sample order is partial COD: each of these must tell the customer what to pay.
@pytest.mark.parametrize(
    "name",
    [
        "order_confirmation",
        "cod_payment_request",
        "cod_payment_reminder",
        "order_shipped",
        "order_out_for_delivery",
    ],
)
def test_order_amounts_are_written_as_money_in_the_customers_region(name: str):
    order = SAMPLES["order"]
    for locale in LOCALES:
        out = _render(name, "email", locale)
        tag = format_locale(locale, REQUESTED[locale]).replace("-", "_")
        amounts = {
            format_currency(order[field], order["currency"], locale=tag)
            for field in ("total", "upfront_amount", "remaining_amount")
        }
        assert any(a in out.text for a in amounts), (locale, out.text)


def test_whatsapp_content_variables_render_to_something():
    for name, entry in RENDERER.catalog.items():
        assert entry.whatsapp_variables, f"{name} has no WhatsApp content variables"
        context = {
            **sample_context(entry.context),
            "render_locale": "en",
            "format_locale": "en-PK",
            "text_direction": "ltr",
        }
        for key, expression in entry.whatsapp_variables.items():
            value = RENDERER.env.from_string(expression).render(context)
            assert value.strip(), f"{name} variable {key} renders empty"


def test_every_file_belongs_to_a_template_and_every_template_is_complete():
    expected = {
        Path(channel) / f"{name}.{locale}.{part}.j2"
        for name in RENDERER.catalog
        for channel, parts in PARTS.items()
        for locale in LOCALES
        for part in parts
    }
    found = {
        path.relative_to(TEMPLATES_DIR)
        for path in TEMPLATES_DIR.rglob("*.j2")
        if not path.name.startswith("_")
    }

    assert found - expected == set(), "files no catalog entry owns"
    assert expected - found == set(), "translations missing"
