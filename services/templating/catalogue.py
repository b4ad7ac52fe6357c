"""The shipped defaults: files under ``templates/{channel}/{name}.{locale}.{part}.j2``,
described in ``templates/catalog.toml`` (kind, the context each is given, WhatsApp and
SMS registrations), and the locale fallback that picks among them."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

PARTS: dict[str, tuple[str, ...]] = {
    "email": ("subject", "html", "text"),
    "sms": ("text",),
    "whatsapp": ("text",),
}
DEFAULT_LOCALE = "en"
TEMPLATES_DIR = Path(__file__).resolve().parents[2] / "templates"
# Always in the context, whatever the template: see templates/README.md.
BASE_CONTEXT = (
    "customer",
    "shop",
    "unsubscribe_url",
    "text_direction",
    "render_locale",
    "format_locale",
)


@dataclass(frozen=True)
class CatalogEntry:
    name: str
    kind: Literal["marketing", "transactional"]
    description: str
    context: tuple[str, ...]
    whatsapp_variables: dict[str, str] = field(default_factory=dict)
    sms_dlt_template_ids: dict[str, str] = field(default_factory=dict)

    @property
    def allowed_variables(self) -> frozenset[str]:
        return frozenset(BASE_CONTEXT) | frozenset(self.context)


def locale_chain(locale: str | None) -> list[str]:
    """``ur-PK`` → ``["ur-PK", "ur", "en"]``: most specific first, English last."""
    chain: list[str] = []
    if locale:
        parts = locale.replace("_", "-").split("-")
        for end in range(len(parts), 0, -1):
            tag = "-".join(parts[:end])
            if tag not in chain:
                chain.append(tag)
    if DEFAULT_LOCALE not in chain:
        chain.append(DEFAULT_LOCALE)
    return chain


def load_catalog(templates_dir: Path) -> dict[str, CatalogEntry]:
    raw = tomllib.loads((templates_dir / "catalog.toml").read_text())
    entries = {}
    for name, spec in raw.items():
        whatsapp = spec.get("whatsapp", {})
        sms = spec.get("sms", {})
        entries[name] = CatalogEntry(
            name=name,
            kind=spec["kind"],
            description=spec.get("description", ""),
            context=tuple(spec.get("context", ())),
            whatsapp_variables=dict(whatsapp.get("variables", {})),
            sms_dlt_template_ids=dict(sms.get("dlt_template_id", {})),
        )
    return entries


def default_locales(templates_dir: Path, name: str, channel: str) -> list[str]:
    """Locales the shipped files cover for this template and channel."""
    found = set()
    for path in (templates_dir / channel).glob(f"{name}.*.j2"):
        parts = path.name[len(name) + 1 :].split(".")
        if len(parts) == 3:
            found.add(parts[0])
    return sorted(found)


def has_default(templates_dir: Path, name: str, channel: str, locale: str) -> bool:
    first = PARTS[channel][0]
    return (templates_dir / channel / f"{name}.{locale}.{first}.j2").exists()
