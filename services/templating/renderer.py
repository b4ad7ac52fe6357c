"""Message templates: Jinja2 in a sandbox, per channel and locale, with locale fallback.

Defaults ship as files under ``templates/{channel}/{name}.{locale}.{part}.j2`` and are
described in ``templates/catalog.toml``; marketers override them per channel and locale
through ``PUT /v1/templates/{name}`` (stored in the database and passed in here as
``overrides``). Rendering is strict: an unknown variable is an error, never an empty
string in a customer's inbox.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path
from types import TracebackType
from typing import Any

from jinja2 import Template, TemplateNotFound, TemplateSyntaxError, UndefinedError, meta, nodes
from jinja2.exceptions import TemplateError as JinjaError
from jinja2.sandbox import SecurityError

from contracts.messages import Channel
from services.templating import catalogue
from services.templating.catalogue import PARTS, TEMPLATES_DIR, CatalogEntry, locale_chain
from services.templating.filters import FILTERS, format_locale, text_direction
from services.templating.sandbox import (
    MAX_OUTPUT_CHARS,
    MAX_RENDER_SECONDS,
    PYTHON_REPR,
    RenderTimeout,
    deadline_tracer,
    sandbox,
)


class TemplateError(Exception):
    """A template that cannot be used: names the template, part and line."""

    def __init__(self, message: str, *, where: str | None = None, line: int | None = None):
        self.where = where
        self.line = line
        prefix = where or "template"
        if line is not None:
            prefix += f", line {line}"
        super().__init__(f"{prefix}: {message}")
        self.message = message


class TemplateNotFoundError(TemplateError):
    pass


@dataclass(frozen=True)
class Rendered:
    channel: Channel
    locale: str
    text: str
    subject: str | None = None
    html: str | None = None
    whatsapp_content_sid: str | None = None
    whatsapp_variables: dict[str, str] | None = None
    sms_dlt_template_id: str | None = None


# One override: {"subject": "...", "html": "...", "text": "..."} (email), {"text": "..."}
# (sms), {"text": "...", "content_sid": "HX...", "variables": {"1": "{{ ... }}"}} (whatsapp).
Override = Mapping[str, Any]


def _line_of(tb: TracebackType | None) -> int | None:
    """The template line an exception was raised on (Jinja maps template frames)."""
    line = None
    while tb is not None:
        filename = tb.tb_frame.f_code.co_filename
        if filename.endswith(".j2") or filename == "<template>":
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


class Renderer:
    def __init__(self, templates_dir: Path = TEMPLATES_DIR) -> None:
        self.dir = templates_dir
        self.env = sandbox(templates_dir, FILTERS)

    @cached_property
    def catalog(self) -> dict[str, CatalogEntry]:
        return catalogue.load_catalog(self.dir)

    def entry(self, name: str) -> CatalogEntry | None:
        return self.catalog.get(name)

    def default_locales(self, name: str, channel: str) -> list[str]:
        """Locales the shipped files cover for this template and channel."""
        return catalogue.default_locales(self.dir, name, channel)

    def render(
        self,
        name: str,
        channel: Channel,
        locale: str | None,
        context: Mapping[str, Any],
        overrides: Mapping[str, Override] | None = None,
    ) -> Rendered:
        """Render every part of ``name`` for ``channel`` in the best locale available.

        ``overrides`` maps a locale to the marketer's stored version for this channel.
        """
        overrides = overrides or {}
        for tag in locale_chain(locale):
            override = overrides.get(tag)
            if override is not None or catalogue.has_default(self.dir, name, channel, tag):
                return self._render_locale(name, channel, tag, locale, context, override)
        raise TemplateNotFoundError(
            f"no {channel} template {name!r} in any of {locale_chain(locale)}", where=name
        )

    def _render_locale(
        self,
        name: str,
        channel: Channel,
        locale: str,
        requested: str | None,
        context: Mapping[str, Any],
        override: Override | None,
    ) -> Rendered:
        full = {
            **context,
            "render_locale": locale,
            "format_locale": format_locale(locale, requested),
            "text_direction": text_direction(locale),
        }
        out: dict[str, str] = {}
        for part in PARTS[channel]:
            where = f"{channel}/{name}.{locale}.{part}"
            if override is not None:
                source = override.get(part)
                if source is None:
                    if part == "text" and channel == "whatsapp" and override.get("content_sid"):
                        out[part] = ""
                        continue
                    raise TemplateError(f"the stored template has no {part!r}", where=where)
                template = self._compile(source, where, html=part == "html")
            else:
                template = self._load(f"{channel}/{name}.{locale}.{part}.j2", where)
            out[part] = self._run(template, full, where)
        rendered = Rendered(
            channel=channel,
            locale=locale,
            text=out["text"],
            subject=" ".join(out["subject"].split()) if "subject" in out else None,
            html=out.get("html"),
        )
        entry = self.entry(name)
        if channel == "whatsapp":
            sid = (override or {}).get("content_sid")
            if sid:
                mapping = (override or {}).get("variables") or (
                    entry.whatsapp_variables if entry else {}
                )
                variables = {
                    key: self._run(self._compile(expr, f"{name} variable {key}"), full, name)
                    for key, expr in mapping.items()
                }
                rendered = replace(rendered, whatsapp_content_sid=sid, whatsapp_variables=variables)
        if channel == "sms":
            dlt = (override or {}).get("dlt_template_id") or (
                entry.sms_dlt_template_ids.get(locale) if entry else None
            )
            if dlt:
                rendered = replace(rendered, sms_dlt_template_id=dlt)
        return rendered

    def _load(self, path: str, where: str) -> Template:
        try:
            return self.env.get_template(path)
        except TemplateNotFound as exc:
            raise TemplateNotFoundError(f"file {path} is missing", where=where) from exc
        except TemplateSyntaxError as exc:
            raise TemplateError(
                exc.message or "syntax error", where=where, line=exc.lineno
            ) from exc

    def _compile(self, source: str, where: str, html: bool = False) -> Template:
        if html:  # files get this from their name; stored HTML must be escaped the same
            source = "{% autoescape true %}" + source + "{% endautoescape %}"
        try:
            return self.env.from_string(source)
        except TemplateSyntaxError as exc:
            raise TemplateError(
                exc.message or "syntax error", where=where, line=exc.lineno
            ) from exc

    def _run(self, template: Template, context: Mapping[str, Any], where: str) -> str:
        previous = sys.gettrace()
        sys.settrace(deadline_tracer(time.monotonic() + MAX_RENDER_SECONDS))
        try:
            text = template.render(context)
        except RenderTimeout as exc:
            raise TemplateError(
                f"took longer than {MAX_RENDER_SECONDS:g} s to render", where=where
            ) from exc
        except SecurityError as exc:
            line = _line_of(exc.__traceback__)
            raise TemplateError(f"not allowed: {exc}", where=where, line=line) from exc
        except UndefinedError as exc:
            line = _line_of(exc.__traceback__)
            raise TemplateError(exc.message or "undefined", where=where, line=line) from exc
        except TemplateNotFound as exc:
            raise TemplateError(f"no template {exc.name!r}", where=where) from exc
        except JinjaError as exc:
            line = _line_of(exc.__traceback__)
            raise TemplateError(exc.message or "error", where=where, line=line) from exc
        except RecursionError as exc:
            raise TemplateError("nested too deeply", where=where) from exc
        except (ValueError, TypeError, ArithmeticError, LookupError, AttributeError) as exc:
            raise TemplateError(str(exc), where=where, line=_line_of(exc.__traceback__)) from exc
        finally:
            sys.settrace(previous)
        if len(text) > MAX_OUTPUT_CHARS:
            raise TemplateError(f"output longer than {MAX_OUTPUT_CHARS} characters", where=where)
        if PYTHON_REPR.search(text):
            raise TemplateError(
                "not allowed: the output shows a Python object, not text", where=where
            )
        return text.strip()

    def check_source(self, source: str, allowed: frozenset[str], where: str) -> None:
        """Refuse syntax errors and variables the template will never be given."""
        try:
            ast = self.env.parse(source)
        except TemplateSyntaxError as exc:
            raise TemplateError(
                exc.message or "syntax error", where=where, line=exc.lineno
            ) from exc
        unknown = meta.find_undeclared_variables(ast) - allowed
        if unknown:
            name = sorted(unknown)[0]
            line = next(
                (n.lineno for n in ast.find_all(nodes.Name) if n.name == name and n.ctx == "load"),
                None,
            )
            raise TemplateError(
                f"unknown variable {name!r}; available: {', '.join(sorted(allowed))}",
                where=where,
                line=line,
            )
