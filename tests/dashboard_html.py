"""A dashboard page as a tree, enough to find its figures: elements by tag and attributes
(``data-figure``, ``data-step`` ...), their text. The standard library's parser: no
dependency for the tests to read what a browser would."""

from __future__ import annotations

from html.parser import HTMLParser

import httpx

VOID = {"br", "hr", "img", "input", "link", "meta", "source", "wbr"}


class Node:
    def __init__(self, tag: str, attrs: dict[str, str | None]) -> None:
        self.tag, self.attrs = tag, attrs
        self.children: list[Node | str] = []

    def text(self) -> str:
        return "".join(c if isinstance(c, str) else c.text() for c in self.children).strip()

    def find_all(self, tag: str | None = None, **attrs: str) -> list[Node]:
        """Every element below, in document order, with these attributes (``data_step``
        is ``data-step``)."""
        wanted = {k.replace("_", "-"): v for k, v in attrs.items()}
        found = []
        for child in self.children:
            if isinstance(child, Node):
                if (tag is None or child.tag == tag) and all(
                    child.attrs.get(k) == v for k, v in wanted.items()
                ):
                    found.append(child)
                found.extend(child.find_all(tag, **attrs))
        return found

    def one(self, tag: str | None = None, **attrs: str) -> Node:
        found = self.find_all(tag, **attrs)
        assert len(found) == 1, f"{len(found)} <{tag or '*'} {attrs}>"
        return found[0]

    def figure(self, name: str) -> tuple[str, str]:
        """The first figure of that name below: its data-value and its text."""
        element = self.find_all(data_figure=name)[0]
        return element.attrs.get("data-value") or "", element.text()


class _Tree(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Node("document", {})
        self.open = [self.root]

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        node = Node(tag, dict(attrs))
        self.open[-1].children.append(node)
        if tag not in VOID:
            self.open.append(node)

    def handle_endtag(self, tag: str) -> None:
        while len(self.open) > 1 and self.open.pop().tag != tag:
            pass

    def handle_data(self, data: str) -> None:
        self.open[-1].children.append(data)


def parse(page: httpx.Response) -> Node:
    assert page.status_code == 200, page.text
    tree = _Tree()
    tree.feed(page.text)
    return tree.root
