"""Message templates: Jinja2 in a sandbox, per channel and locale, with locale fallback.

Defaults ship as files under ``templates/{channel}/{name}.{locale}.{part}.j2`` and are
described in ``templates/catalog.toml``; marketers override them per channel and locale
through ``PUT /v1/templates/{name}`` (stored in the database and passed in here as
``overrides``). Rendering is strict: an unknown variable is an error, never an empty
string in a customer's inbox.
"""

from __future__ import annotations

import re
import sys
import time
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from functools import cached_property
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any, Literal

from babel import Locale, UnknownLocaleError
from babel.dates import format_date, format_datetime
from babel.numbers import format_currency
from jinja2 import (
    FileSystemLoader,
    StrictUndefined,
    Template,
    TemplateNotFound,
    TemplateSyntaxError,
    Undefined,
    UndefinedError,
    meta,
    nodes,
    pass_context,
)
from jinja2.exceptions import TemplateError as JinjaError
from jinja2.filters import do_format, do_indent, do_slice
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError

from contracts.messages import Channel

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
_RTL_LANGUAGES = frozenset({"ar", "fa", "he", "ps", "sd", "ug", "ur", "yi"})
MAX_OUTPUT_CHARS = 500_000
# A render that takes longer is stopped: loops over loops, runaway macros.
MAX_RENDER_SECONDS = 2.0
# Largest number `**` may build, in bits (a 20-digit number is 67 bits).
MAX_POWER_BITS = 4096
# A field width or precision of 7+ digits pads a string towards gigabytes.
_HUGE_WIDTH = re.compile(
    r"%[-#0 +]*(?:\*|\d{7,})|%[-#0 +]*\d*\.(?:\*|\d{7,})|\{[^{}]*:[^{}]*\d{7,}"
)
# How Python shows an object that is not data (what `|string`, `|format` or `~` make of a
# function or class): never in a message, it shows the server's internals.
_PYTHON_REPR = re.compile(
    r"<(?:class|function|built-in|bound method|method|module|generator|coroutine|cell) "
    r"| object at 0x[0-9a-fA-F]+"
)
_PADDING_METHODS = frozenset({"center", "ljust", "rjust", "zfill", "expandtabs"})


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


def _babel_locale(tag: str) -> Locale:
    try:
        return Locale.parse(tag.replace("-", "_"))
    except (UnknownLocaleError, ValueError):
        return Locale.parse(DEFAULT_LOCALE)


def format_locale(template_locale: str, requested: str | None) -> str:
    """Numbers and dates follow the customer's region in the template's language:
    an English template for an en-PK customer shows "Rs 4,500.00", not "PKR4,500.00"."""
    language = template_locale.split("-")[0]
    region = None
    if requested:
        parts = requested.replace("_", "-").split("-")
        region = next((p for p in parts[1:] if len(p) == 2 and p.isalpha()), None)
    if region:
        candidate = f"{language}-{region.upper()}"
        try:
            Locale.parse(candidate.replace("-", "_"))
            return candidate
        except (UnknownLocaleError, ValueError):
            pass
    return template_locale


def text_direction(locale: str) -> str:
    return "rtl" if locale.split("-")[0] in _RTL_LANGUAGES else "ltr"


@pass_context
def _money(context: Context, value: Any, currency: str | None = None) -> str:
    """``{{ cart.total | money(cart.currency) }}`` in the customer's locale: Rs 4,500.00."""
    try:
        amount = Decimal(str(value))
    except InvalidOperation as exc:
        raise ValueError(f"money filter got {value!r}, not an amount") from exc
    code = currency or context.get("currency")
    if not code:
        raise ValueError("money filter needs a currency: {{ amount | money(cart.currency) }}")
    return str(format_currency(amount, code, locale=_babel_locale(context["format_locale"])))


def _as_datetime(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, str):
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    raise ValueError(f"expected a date-time, got {value!r}")


@pass_context
def _datetime(context: Context, value: Any, format: str = "medium") -> str:
    """A moment in the customer's own time zone and language."""
    tz = (context.get("customer") or {}).get("timezone") or "UTC"
    return str(
        format_datetime(
            _as_datetime(value),
            format=format,
            tzinfo=_zone(tz),
            locale=_babel_locale(context["format_locale"]),
        )
    )


@pass_context
def _date(context: Context, value: Any, format: str = "long") -> str:
    tz = (context.get("customer") or {}).get("timezone") or "UTC"
    moment = _as_datetime(value).astimezone(_zone(tz))
    locale = _babel_locale(context["format_locale"])
    return str(format_date(moment.date(), format=format, locale=locale))


def _zone(name: str) -> Any:
    from zoneinfo import ZoneInfo

    return ZoneInfo(name)


class RenderTimeout(Exception):
    """A render ran past MAX_RENDER_SECONDS."""


def _refuse_huge_width(spec: Any) -> None:
    if isinstance(spec, str) and _HUGE_WIDTH.search(spec):
        raise SecurityError("a field width or precision that large is not allowed")


def _sized(value: Any) -> int | None:
    return len(value) if isinstance(value, str | list | tuple) else None


class _Environment(ImmutableSandboxedEnvironment):
    """The sandbox: no attribute starting with ``_``, no mutation of what is passed in,
    no ``range`` beyond 100,000 items (Jinja's own limits), nothing of the server's, and
    no string, list or number built bigger than any message could be."""

    intercepted_binops = frozenset({"*", "**", "%"})

    def getattr(self, obj: Any, attribute: str) -> Any:
        # Context values are plain mappings: `cart.items` means the cart's items, not
        # dict.items.
        if isinstance(obj, Mapping) and attribute in obj:
            return obj[attribute]
        if isinstance(obj, str) and attribute in ("format", "format_map"):
            _refuse_huge_width(obj)
        return super().getattr(obj, attribute)

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        if (
            isinstance(getattr(__obj, "__self__", None), str)
            and getattr(__obj, "__name__", None) in _PADDING_METHODS
            and any(isinstance(a, int) and a > MAX_OUTPUT_CHARS for a in args)
        ):
            raise SecurityError(f"padding to more than {MAX_OUTPUT_CHARS} characters")
        return super().call(__context, __obj, *args, **kwargs)

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        if operator == "*":
            for seq, times in ((left, right), (right, left)):
                size = _sized(seq)
                if size is not None and isinstance(times, int) and size * times > MAX_OUTPUT_CHARS:
                    raise SecurityError(f"'*' would build more than {MAX_OUTPUT_CHARS} items")
        elif operator == "**":
            if (
                isinstance(left, int)
                and isinstance(right, int)
                and abs(left) > 1
                and right * abs(left).bit_length() > MAX_POWER_BITS
            ):
                raise SecurityError("'**' would build a number too large to print")
        elif operator == "%":
            _refuse_huge_width(left)
        return super().call_binop(context, operator, left, right)


def _format(value: Any, *args: Any, **kwargs: Any) -> str:
    _refuse_huge_width(value)
    return do_format(value, *args, **kwargs)


def _center(value: Any, width: int = 80) -> str:
    if width > MAX_OUTPUT_CHARS:
        raise SecurityError(f"padding to more than {MAX_OUTPUT_CHARS} characters")
    return str(value).center(width)


def _indent(value: Any, width: int | str = 4, first: bool = False, blank: bool = False) -> str:
    if (isinstance(width, int) and width > MAX_OUTPUT_CHARS) or len(str(width)) > MAX_OUTPUT_CHARS:
        raise SecurityError(f"indenting by more than {MAX_OUTPUT_CHARS} characters")
    return do_indent(value, width, first, blank)


MAX_SLICES = 1000


def _slice(value: Any, slices: int, fill_with: Any = None) -> Any:
    # slice(n) builds n lists in a loop the render deadline cannot interrupt.
    if isinstance(slices, int) and slices > MAX_SLICES:
        raise SecurityError(f"slicing into more than {MAX_SLICES} parts")
    return do_slice(value, slices, fill_with)


_DATA = (str, int, float, Decimal, date, datetime, type(None))


def _is_data(value: Any, depth: int = 0) -> bool:
    if isinstance(value, _DATA):
        return True
    if depth > 20:
        return False
    if isinstance(value, Mapping):
        return all(_is_data(k, depth + 1) and _is_data(v, depth + 1) for k, v in value.items())
    if isinstance(value, list | tuple):
        return all(_is_data(v, depth + 1) for v in value)
    return False


def _printable(value: Any) -> Any:
    """What ``{{ ... }}`` may print: data, never a function, class or other Python object
    (their text shows the server's internals)."""
    if isinstance(value, Undefined) or _is_data(value):
        return value
    raise SecurityError(f"a {type(value).__name__} cannot be printed, only text and numbers")


def _deadline_tracer(deadline: float) -> Callable[..., Any]:
    """A trace function that stops the render once ``deadline`` has passed: checked on
    every call (filters, macros, generators resuming) and every line of template code."""

    def on_line(frame: FrameType, event: str, arg: Any) -> Any:
        if time.monotonic() > deadline:
            raise RenderTimeout
        return on_line

    def on_call(frame: FrameType, event: str, arg: Any) -> Any:
        if time.monotonic() > deadline:
            raise RenderTimeout
        name = frame.f_code.co_filename
        return on_line if name == "<template>" or name.endswith(".j2") else None

    return on_call


def _autoescape(name: str | None) -> bool:
    return bool(name) and str(name).endswith(".html.j2")


def _syntax(exc: TemplateSyntaxError, where: str) -> TemplateError:
    return TemplateError(exc.message or "syntax error", where=where, line=exc.lineno)


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
        self.env = _Environment(
            loader=FileSystemLoader(str(templates_dir)),
            undefined=StrictUndefined,
            autoescape=_autoescape,
            trim_blocks=True,
            lstrip_blocks=True,
            keep_trailing_newline=False,
            finalize=_printable,
        )
        self.env.filters.update(
            money=_money,
            datetime=_datetime,
            date=_date,
            format=_format,
            center=_center,
            indent=_indent,
            slice=_slice,
        )
        # lipsum(n) loops in Python for as long as n says; no message needs lorem ipsum.
        self.env.globals.pop("lipsum", None)

    @cached_property
    def catalog(self) -> dict[str, CatalogEntry]:
        raw = tomllib.loads((self.dir / "catalog.toml").read_text())
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

    def entry(self, name: str) -> CatalogEntry | None:
        return self.catalog.get(name)

    def default_locales(self, name: str, channel: str) -> list[str]:
        """Locales the shipped files cover for this template and channel."""
        found = set()
        for path in (self.dir / channel).glob(f"{name}.*.j2"):
            parts = path.name[len(name) + 1 :].split(".")
            if len(parts) == 3:
                found.add(parts[0])
        return sorted(found)

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
            if override is not None or self._has_file(name, channel, tag):
                return self._render_locale(name, channel, tag, locale, context, override)
        raise TemplateNotFoundError(
            f"no {channel} template {name!r} in any of {locale_chain(locale)}", where=name
        )

    def _has_file(self, name: str, channel: str, locale: str) -> bool:
        first = PARTS[channel][0]
        return (self.dir / channel / f"{name}.{locale}.{first}.j2").exists()

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
        sys.settrace(_deadline_tracer(time.monotonic() + MAX_RENDER_SECONDS))
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
        if _PYTHON_REPR.search(text):
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


_SAMPLE_LINE: dict[str, Any] = {
    "sku": "SKU1",
    "name": "Lawn suit",
    "quantity": 2,
    "unit_price": "4500.00",
    "line_total": "9000.00",
    "category": "apparel",
    "url": "https://shop.example.com/p/sku1",
    "image_url": "https://shop.example.com/i/sku1.jpg",
}
# What templates are given in previews and in the checks made when a template is saved.
SAMPLES: dict[str, Any] = {
    "customer": {
        "id": "c_sample",
        "name": "Ayesha Khan",
        "first_name": "Ayesha",
        "email": "ayesha@example.com",
        "phone": "+923001234567",
        "locale": "en-PK",
        "timezone": "Asia/Karachi",
        "country": "PK",
    },
    "shop": {
        "name": "Sutra Demo Shop",
        "url": "https://shop.example.com",
        "support_email": "help@shop.example.com",
    },
    "unsubscribe_url": "https://sutra.example.com/u/sample-token",
    "cart": {
        "id": "cart_sample",
        "currency": "PKR",
        "total": "9000.00",
        "item_count": 2,
        "line_count": 1,
        "first_item_name": "Lawn suit",
        "checkout_url": "https://shop.example.com/checkout/cart_sample",
        "items": [_SAMPLE_LINE],
    },
    "coupon": {"code": "SUTRA-7KQ2-M9XD", "percent_off": 10, "expires_at": "2026-11-25T18:00:00Z"},
    "order": {
        "id": "ord_sample",
        "currency": "PKR",
        "total": "9000.00",
        "items": [{**_SAMPLE_LINE, "image_url": None}],
        "payment_type": "partial_cod",
        "upfront_amount": "1350.00",
        "remaining_amount": "7650.00",
        "payment_link": "https://rzp.io/l/sample",
        "pay_by": "2026-11-23T10:00:00Z",
        "tracking_url": "https://track.example.com/ord_sample",
        "carrier": "TCS",
        "shipping_city": "Lahore",
        "cancel_reason": "unpaid",
        "refund_amount": None,
        "confirm_by": "2026-11-23T10:00:00Z",
        "prepay_offer": {
            "percent_off": 5,
            "amount": "8550.00",
            "payment_link": "https://rzp.io/l/offer",
            "valid_until": "2026-11-23T10:00:00Z",
        },
    },
    "product": {
        "sku": "SKU9",
        "name": "Embroidered shawl",
        "url": "https://shop.example.com/p/sku9",
        "image_url": "https://shop.example.com/i/sku9.jpg",
        "price": "3200.00",
        "old_price": "4000.00",
        "new_price": "3200.00",
        "currency": "PKR",
    },
    "recommendations": [
        {
            "sku": "SKU7",
            "name": "Silk dupatta",
            "url": "https://shop.example.com/p/sku7",
            "image_url": None,
            "price": "1800.00",
            "currency": "PKR",
        }
    ],
}


def sample_context(names: tuple[str, ...] | frozenset[str]) -> dict[str, Any]:
    return {name: SAMPLES[name] for name in (*BASE_CONTEXT, *names) if name in SAMPLES}
