"""Reading the report's pages as a strict reader would: structure, links, text (for the report and e2e tests)."""

from __future__ import annotations

import os
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote_to_bytes, urlsplit

_VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


class _Page(HTMLParser):
    """Links, ids, text and structural errors of one page (what a browser would silently repair)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.links: list[str] = []
        self.ids: list[str] = []
        self.text: list[str] = []
        self.errors: list[str] = []
        self.open: list[str] = []
        self.tags: list[str] = []
        self.doctype = False

    def handle_decl(self, decl: str) -> None:
        self.doctype = decl.lower() == "doctype html"

    def handle_starttag(self, tag: str, attrs: list) -> None:
        self.tags.append(tag)
        values = dict(attrs)
        if tag == "a" and "a" in self.open:
            self.errors.append("a link inside a link")
        for name in ("href", "src"):
            if values.get(name) is not None:
                self.links.append(values[name])
        if "id" in values:
            self.ids.append(values["id"])
        if tag not in _VOID:
            self.open.append(tag)

    def handle_startendtag(self, tag: str, attrs: list) -> None:
        self.tags.append(tag)
        if tag not in _VOID and tag not in ("path", "line", "rect"):
            self.errors.append(f"<{tag}/> is not a void element")

    def handle_endtag(self, tag: str) -> None:
        if not self.open or self.open[-1] != tag:
            self.errors.append(f"</{tag}> closes <{self.open[-1] if self.open else 'nothing'}>")
        else:
            self.open.pop()

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def read_page(path: Path) -> tuple[_Page, str]:
    """The page parsed, and its source (which must be UTF-8)."""
    source = path.read_bytes().decode("utf-8")
    parsed = _Page()
    parsed.feed(source)
    parsed.close()
    return parsed, source


def link_target(page: Path, url: str) -> Path:
    """The file a relative link of ``page`` reaches: the URL's path percent-decoded to bytes, as a browser
    opening the page from the disk does (not to UTF-8 text: a name may be any bytes)."""
    parts = urlsplit(url)
    assert not parts.scheme and not parts.netloc and not url.startswith("/"), (page, url)
    assert not parts.query and not parts.fragment, (page, url)  # a '?' or '#' of a name must be encoded
    return (page.parent / os.fsdecode(unquote_to_bytes(parts.path))).resolve()
