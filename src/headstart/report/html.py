"""The HTML the report is made of: one self-contained page, nothing fetched when it opens.

Styles are inline, images are ``data:`` URIs, fonts are the reader's own, and there is no
script; a Content-Security-Policy says so to the browser, so even a bug here cannot make the
page load anything. Every piece of text from the run (class names, paths, reasons) passes
through :func:`escape`; only :class:`Html` values, built here, are inserted as they are.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

__all__ = ["Cell", "Html", "badge", "escape", "figure", "join", "note", "page", "table"]


class Html(str):
    """Markup made by this module: inserted as is, never escaped again."""

    def __add__(self, other: object) -> Html:  # markup + text: the text is escaped
        return Html(str.__add__(self, escape(other)))


def escape(value: object) -> Html:
    return value if isinstance(value, Html) else Html(html.escape(str(value), quote=True))


def join(parts: Iterable[object], separator: str = "") -> Html:
    return Html(separator.join(escape(part) for part in parts))


def tag(name: str, content: object = "", **attributes: object) -> Html:
    """``<name attr="value">content</name>``; ``class_`` stands for ``class``."""
    return Html(f"<{name}{_attributes(**attributes)}>{escape(content)}</{name}>")


def paragraph(*parts: object, class_: str | None = None) -> Html:
    return tag("p", join(parts), class_=class_)


def note(text: object) -> Html:
    """A muted line: why a section is empty, or a caveat."""
    return paragraph(text, class_="note")


def bullets(items: Iterable[object]) -> Html:
    return tag("ul", join(tag("li", item) for item in items))


#: Status -> (CSS class, the word shown). The word is there so colour is never the only cue.
BADGES = {
    "pass": ("good", "PASS"),
    "fail": ("bad", "FAIL"),
    "skip": ("muted", "SKIP"),
    "info": ("info", "INFO"),
    "holds": ("good", "HOLDS"),
    "does not hold": ("bad", "DOES NOT HOLD"),
}


def badge(status: str, text: str | None = None) -> Html:
    css, word = BADGES.get(status, ("muted", status.upper()))
    return tag("span", text or word, class_=f"badge {css}")


@dataclass(frozen=True)
class Cell:
    """A table cell with a class of its own (a colour), instead of the column's alignment."""

    content: object
    class_: str


def table(
    header: Sequence[object] | None,
    rows: Iterable[Sequence[object]],
    align: str = "",
    class_: str | None = None,
) -> Html:
    """A table; ``align`` has one letter per column, ``l`` or ``r`` (numbers: right).
    Without a header, the first column is a header column (a list of facts)."""

    def cells(name: str, values: Sequence[object]) -> Html:
        return join(
            tag(name, value.content, class_=value.class_)
            if isinstance(value, Cell)
            else tag(name, value, class_="num" if align[i : i + 1] == "r" else None)
            for i, value in enumerate(values)
        )

    if header is None:
        head = Html("")
        body = tag("tbody", join(tag("tr", tag("th", r[0]) + cells("td", r[1:])) for r in rows))
    else:
        head = tag("thead", tag("tr", cells("th", header)))
        body = tag("tbody", join(tag("tr", cells("td", row)) for row in rows))
    return tag("div", tag("table", head + body, class_=class_), class_="scroll")


def image(png: bytes, alt: str, **attributes: object) -> Html:
    source = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
    return Html(f"<img{_attributes(src=source, alt=alt, **attributes)}>")


def figure(png: bytes, alt: str, caption: object = None) -> Html:
    content = image(png, alt)
    if caption:
        content = Html(content + tag("figcaption", caption))
    return tag("figure", content)


def _attributes(**attributes: object) -> str:
    return "".join(
        f' {key.rstrip("_").replace("_", "-")}="{escape(value)}"'
        for key, value in attributes.items()
        if value is not None
    )


def page(title: str, subtitle: object, sections: Sequence[tuple[str, str, Html]]) -> str:
    """The whole document: a title, a table of contents, then each ``(id, heading, body)``."""
    contents = tag(
        "nav",
        tag(
            "ol", join(tag("li", tag("a", heading, href=f"#{id_}")) for id_, heading, _ in sections)
        ),
    )
    body = join(
        tag("section", tag("h2", heading) + body, id=id_) for id_, heading, body in sections
    )
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta http-equiv="Content-Security-Policy" '
        "content=\"default-src 'none'; img-src data:; style-src 'unsafe-inline'\">\n"
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{escape(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n<main>\n"
        f"<header>{tag('h1', title)}{paragraph(subtitle, class_='note')}</header>\n"
        f"{contents}\n{body}\n</main>\n</body>\n</html>\n"
    )


CSS = """
:root { --good: #1b7f3b; --good-bg: #e3f4e8; --bad: #b3261e; --bad-bg: #fbe4e2;
  --muted: #5f6368; --line: #dadce0; --info: #1a5fb4; --info-bg: #e3edf9; }
* { box-sizing: border-box; }
body { margin: 0; background: #f6f7f9; color: #202124;
  font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial,
  sans-serif; }
main { max-width: 60rem; margin: 0 auto; padding: 1.5rem 1.25rem 4rem; background: #fff; }
h1 { font-size: 1.6rem; margin: 0 0 .25rem; }
h2 { font-size: 1.25rem; margin: 2.5rem 0 .75rem; padding-top: .5rem;
  border-top: 1px solid var(--line); }
h3 { font-size: 1.02rem; margin: 1.5rem 0 .5rem; }
nav ol { columns: 2; margin: 1rem 0; padding-left: 1.5rem; color: var(--muted); }
nav a { color: var(--info); text-decoration: none; }
.note { color: var(--muted); font-size: .92rem; }
.scroll { overflow-x: auto; margin: .5rem 0 1rem; }
table { border-collapse: collapse; font-size: .9rem; }
th, td { padding: .3rem .65rem; border-bottom: 1px solid var(--line); text-align: left;
  vertical-align: top; }
th { background: #f1f3f4; font-weight: 600; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.text { text-align: left; white-space: normal; overflow-wrap: anywhere; }
table.facts { width: 100%; }
table.facts th { background: none; white-space: nowrap; width: 12rem; font-weight: 600; }
.badge { display: inline-block; padding: 0 .45rem; border-radius: 3px; font-size: .75rem;
  font-weight: 700; letter-spacing: .03em; white-space: nowrap; }
.badge.good { color: var(--good); background: var(--good-bg); border: 1px solid var(--good); }
.badge.bad { color: var(--bad); background: var(--bad-bg); border: 1px solid var(--bad); }
.badge.muted { color: var(--muted); background: #f1f3f4; border: 1px solid var(--line); }
.badge.info { color: var(--info); background: var(--info-bg); border: 1px solid var(--info); }
figure { margin: 1rem 0; }
figure img { max-width: 100%; height: auto; }
figcaption { color: var(--muted); font-size: .88rem; margin-top: .3rem; }
.tiles { display: flex; flex-wrap: wrap; gap: .6rem; margin: .5rem 0 1rem; }
.tile { width: 124px; margin: 0; font-size: .75rem; line-height: 1.3; }
.tile img, .tile .missing { width: 96px; height: 96px; display: block; border-radius: 2px; }
.tile .missing { background: #eee; color: var(--muted); display: flex; align-items: center;
  justify-content: center; text-align: center; font-size: .7rem; border: 1px dashed #bbb; }
.tile .wrong { color: var(--bad); font-weight: 600; }
.tile .path { color: var(--muted); overflow-wrap: anywhere; }
.filters { image-rendering: pixelated; }
table.batch td { text-align: center; font-size: .8rem; white-space: nowrap; }
table.batch td.good { background: var(--good-bg); color: var(--good); }
table.batch td.bad { background: var(--bad-bg); color: var(--bad); }
table.batch img { width: 56px; height: 56px; display: block; }
.finding { margin: .5rem 0 .9rem; }
.measure { display: block; white-space: nowrap; font-variant-numeric: tabular-nums; }
details { margin: .5rem 0 1rem; }
summary { cursor: pointer; color: var(--info); }
"""
