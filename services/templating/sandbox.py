"""The Jinja2 sandbox every template renders in, and the limits it enforces.

No attribute starting with ``_``, no mutation of what is passed in, nothing of the
server's, no output that shows a Python object, no string, list or number built bigger
than any message could be, and no render that runs past a deadline.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from types import FrameType
from typing import Any

from jinja2 import FileSystemLoader, StrictUndefined, Undefined
from jinja2.filters import do_format, do_indent, do_slice
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError

MAX_OUTPUT_CHARS = 500_000
# A render that takes longer is stopped: loops over loops, runaway macros.
MAX_RENDER_SECONDS = 2.0
# Largest number `**` may build, in bits (a 20-digit number is 67 bits).
MAX_POWER_BITS = 4096
MAX_SLICES = 1000
# A field width or precision of 7+ digits pads a string towards gigabytes.
_HUGE_WIDTH = re.compile(
    r"%[-#0 +]*(?:\*|\d{7,})|%[-#0 +]*\d*\.(?:\*|\d{7,})|\{[^{}]*:[^{}]*\d{7,}"
)
# How Python shows an object that is not data (what `|string`, `|format` or `~` make of a
# function or class): never in a message, it shows the server's internals.
PYTHON_REPR = re.compile(
    r"<(?:class|function|built-in|bound method|method|module|generator|coroutine|cell) "
    r"| object at 0x[0-9a-fA-F]+"
)
_PADDING_METHODS = frozenset({"center", "ljust", "rjust", "zfill", "expandtabs"})


class RenderTimeout(Exception):
    """A render ran past MAX_RENDER_SECONDS."""


def _refuse_huge_width(spec: Any) -> None:
    if isinstance(spec, str) and _HUGE_WIDTH.search(spec):
        raise SecurityError("a field width or precision that large is not allowed")


def _sized(value: Any) -> int | None:
    return len(value) if isinstance(value, str | list | tuple) else None


class Sandbox(ImmutableSandboxedEnvironment):
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


def _slice(value: Any, slices: int, fill_with: Any = None) -> Any:
    # slice(n) builds n lists in a loop the render deadline cannot interrupt.
    if isinstance(slices, int) and slices > MAX_SLICES:
        raise SecurityError(f"slicing into more than {MAX_SLICES} parts")
    return do_slice(value, slices, fill_with)


# Jinja's own filters of these names, with the sizes they may build capped.
BOUNDED_FILTERS: dict[str, Callable[..., Any]] = {
    "format": _format,
    "center": _center,
    "indent": _indent,
    "slice": _slice,
}

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


def deadline_tracer(deadline: float) -> Callable[..., Any]:
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


def sandbox(templates_dir: Path, filters: Mapping[str, Callable[..., Any]]) -> Sandbox:
    """The environment for the files under ``templates_dir``, with ``filters`` besides the
    bounded ones: strict about unknown variables, HTML files escaped."""
    env = Sandbox(
        loader=FileSystemLoader(str(templates_dir)),
        undefined=StrictUndefined,
        autoescape=_autoescape,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=False,
        finalize=_printable,
    )
    env.filters.update(**filters, **BOUNDED_FILTERS)
    # lipsum(n) loops in Python for as long as n says; no message needs lorem ipsum.
    env.globals.pop("lipsum", None)
    return env
