"""Escaped HTML fragments: every value is escaped unless it is already ``Markup``."""

from __future__ import annotations

import html
from collections.abc import Iterable


class Markup(str):
    """A string that is safe to embed in HTML as is (already escaped or trusted)."""

    __slots__ = ()


def escape(value: object) -> Markup:
    """``value`` as HTML text (quotes included); ``Markup`` passes through unchanged."""
    if isinstance(value, Markup):
        return value
    return Markup(html.escape("" if value is None else str(value), quote=True))


def fmt(template: str, /, **values: object) -> Markup:
    """``template.format(**values)`` with every value escaped.

    The template itself is trusted: pass only literals written in this package.
    """
    return Markup(template.format(**{name: escape(value) for name, value in values.items()}))


def join(parts: Iterable[Markup], separator: str = "") -> Markup:
    """Concatenate fragments; plain strings among them are escaped."""
    return Markup(separator.join(escape(part) for part in parts))
