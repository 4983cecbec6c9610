"""Reading HTML in tests: the start tags of a document and their attributes."""

from __future__ import annotations

from html.parser import HTMLParser


class Elements(HTMLParser):
    """Every start tag of a document with its attributes, in document order."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[tuple[str, dict[str, str]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.found.append((tag, {name: value or "" for name, value in attrs}))


def elements(html: str, tag: str, **attrs: str) -> list[dict[str, str]]:
    """Attributes of the ``tag`` elements whose attributes include ``attrs``.

    ``class_`` matches one class of a space-separated list.
    """
    parser = Elements()
    parser.feed(html)
    wanted_class = attrs.pop("class_", None)
    return [
        found
        for name, found in parser.found
        if name == tag
        and all(found.get(k) == v for k, v in attrs.items())
        and (wanted_class is None or wanted_class in found.get("class", "").split())
    ]
