"""The pages' shared parts: one inline style sheet, the page shell, escaping, relative links, number formats.

Pages are plain HTML with the style sheet inline and no script: they read the same from a Samba share, a USB
stick or a phone's file browser. Every link is relative (:func:`link`), so the folder can be moved or copied.
"""

from __future__ import annotations

import functools
import html
import os
import posixpath
from datetime import datetime
from urllib.parse import quote_from_bytes

from watcher import __version__
from watcher.names import display
from watcher.record import parse_time

STYLE = """
:root{color-scheme:light dark;--fg:#1b1f24;--muted:#5b6470;--bg:#f6f7f9;--card:#fff;--line:#d9dde3;
--ok:#1f7a3d;--bad:#b42318;--bad-bg:#fde8e6;--warn:#8a5a00;--warn-bg:#fff4d6;--wait:#4b5563;--wait-bg:#eceff3;
--accent:#1d5fbf}
@media (prefers-color-scheme:dark){:root{--fg:#e6e8eb;--muted:#9aa3ad;--bg:#111418;--card:#1a1e24;--line:#2e343c;
--ok:#4ac274;--bad:#ff8a7a;--bad-bg:#3a1d1a;--warn:#f2c14e;--warn-bg:#33290f;--wait:#aab3bd;--wait-bg:#232830;
--accent:#7fb0ff}}
*{box-sizing:border-box}
body{margin:0;font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;color:var(--fg);
background:var(--bg)}
main{max-width:1200px;margin:0 auto;padding:12px 16px 40px}
a{color:var(--accent)}
h1{font-size:1.5em;margin:.2em 0 .1em;overflow-wrap:anywhere}
h2{font-size:1.15em;margin:1.4em 0 .5em}
nav{font-size:.9em;color:var(--muted);overflow-wrap:anywhere}
.sub,.muted{color:var(--muted)}
.sub{margin:0 0 .8em}
.totals{display:flex;flex-wrap:wrap;gap:8px;margin:.6em 0}
.totals div{background:var(--card);border:1px solid var(--line);border-radius:8px;padding:6px 12px}
.totals b{display:block;font-size:1.4em}
.ok{color:var(--ok)}.bad{color:var(--bad)}.warn{color:var(--warn)}.wait{color:var(--wait)}
.box{background:var(--card);border:1px solid var(--line);border-radius:8px;padding:10px 14px;margin:.5em 0}
.box.bad{background:var(--bad-bg);border-color:var(--bad);color:var(--fg)}
.box.warn{background:var(--warn-bg);border-color:var(--warn);color:var(--fg)}
.box ul{margin:.2em 0;padding-left:1.2em}
.scans{display:grid;gap:10px}
.scan{display:grid;grid-template-columns:128px 1fr;gap:12px;background:var(--card);border:1px solid var(--line);
border-radius:8px;padding:10px;text-decoration:none;color:inherit}
.scan.bad{border-left:5px solid var(--bad)}
.scan img,.scan .noimg{width:128px;height:96px;object-fit:cover;border-radius:4px;background:var(--wait-bg)}
.scan h3{margin:0;font-size:1.05em;color:var(--accent);overflow-wrap:anywhere}
.scan p{margin:.2em 0}
.meter{display:flex;height:8px;border-radius:4px;overflow:hidden;background:var(--wait-bg);margin:.3em 0}
.meter span{display:block}
.meter .ok{background:var(--ok)}.meter .bad{background:var(--bad)}.meter .wait{background:var(--line)}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(120px,1fr));gap:8px}
.tile{position:relative;display:block;background:var(--card);border:1px solid var(--line);border-radius:6px;
overflow:hidden;text-decoration:none;color:inherit}
.tile img,.tile .ph{display:block;width:100%;aspect-ratio:var(--ar,4/3);object-fit:cover;background:var(--wait-bg)}
.tile .ph{display:flex;align-items:center;justify-content:center;padding:6px;font-size:.8em;color:var(--muted);
text-align:center;overflow:hidden}
.tile.bad{border:2px solid var(--bad)}
.tile.bad .ph{background:var(--bad-bg);color:var(--fg);align-items:flex-start;justify-content:flex-start;
text-align:left;overflow-wrap:anywhere}
.tile.pending{border:2px dashed var(--line)}
.tile img.dim{opacity:.35}
.tile .label{display:block;padding:2px 6px;font-size:.85em;white-space:nowrap;overflow:hidden;text-overflow:ellipsis}
.tile .badge{position:absolute;top:4px;right:4px;border-radius:10px;padding:0 7px;font-size:.75em;font-weight:600}
.badge.bad{background:var(--bad);color:#fff}.badge.warn{background:var(--warn);color:#000}
.badge.wait{background:var(--wait);color:var(--bg)}
.failures li{margin:.15em 0;overflow-wrap:anywhere}
table{border-collapse:collapse;width:100%;background:var(--card);font-size:.9em}
th,td{border-bottom:1px solid var(--line);padding:4px 8px;text-align:left;vertical-align:top}
th{color:var(--muted);font-weight:600}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.table{overflow-x:auto}
table.narrow{width:auto;min-width:50%}
td.share{white-space:nowrap}
.facts{display:flex;flex-wrap:wrap;gap:4px 18px;margin:.3em 0 .8em;color:var(--muted)}
.facts b{color:var(--fg);font-weight:600}
.bar{display:inline-block;height:10px;background:var(--accent);border-radius:2px;vertical-align:middle}
.images{display:grid;grid-template-columns:repeat(auto-fit,minmax(260px,1fr));gap:12px}
.images figure{margin:0}
.images img{max-width:100%;height:auto;border-radius:6px;background:var(--wait-bg)}
.masked{position:relative;display:inline-block;max-width:100%}.masked img{display:block}
.masked img.mask{position:absolute;inset:0;width:100%;height:100%;mix-blend-mode:multiply;opacity:.7;background:none}
figcaption{font-size:.85em;color:var(--muted)}
.chart svg{width:100%;height:auto;display:block;background:var(--card);border:1px solid var(--line);border-radius:6px}
.legend{font-size:.85em;color:var(--muted);margin:.3em 0}
.legend i{display:inline-block;width:12px;height:12px;margin:0 3px -2px 8px;border-radius:2px}
.pager{display:flex;justify-content:space-between;gap:8px;margin:.4em 0;font-size:.95em}
code{font-size:.9em;overflow-wrap:anywhere}
@media (max-width:560px){body{font-size:14px}main{padding:8px 10px 30px}
.totals{gap:6px}.totals div{padding:4px 8px;font-size:.9em}.totals b{font-size:1.2em}
.scan{grid-template-columns:84px 1fr}.scan img,.scan .noimg{width:84px;height:63px}
.grid{grid-template-columns:repeat(auto-fill,minmax(96px,1fr))}}
"""


def esc(value: object) -> str:
    """Text (or an attribute value) made safe for HTML; a name's undecodable bytes are shown as ``\\xNN``
    (:func:`watcher.names.display`)."""
    return html.escape(display(str(value)), quote=True)


def link(page_folder: str, target: str) -> str:
    """URL of ``target`` as seen from a page in ``page_folder`` (both relative to the results folder).

    Every byte of the path but unreserved ones and ``/`` is percent-encoded, so the link reaches the file
    whatever its name holds: ``#``, ``?``, ``%``, or bytes that are not UTF-8 (``caf%E9``).
    """
    folder, _, name = target.rpartition("/")
    up = _relative_folder(page_folder, folder)
    return quote_from_bytes(os.fsencode(name if up == "." else f"{up}/{name}"), safe="/")


@functools.lru_cache(maxsize=256)
def _relative_folder(page_folder: str, folder: str) -> str:
    # A scan page links hundreds of files in one or two folders: compute the way there once.
    return posixpath.relpath(folder or ".", page_folder or ".")


def page(title: str, body: str, *, crumbs: list[tuple[str, str | None]] = ()) -> str:
    """A whole HTML document; ``crumbs`` are (label, relative URL or None for the current page)."""
    trail = " / ".join(esc(label) if url is None else f'<a href="{esc(url)}">{esc(label)}</a>' for label, url in crumbs)
    nav = f"<nav>{trail}</nav>" if crumbs else ""
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">"
        f"<meta name=\"generator\" content=\"focus-watcher {esc(__version__)}\">"
        f"<title>{esc(title)}</title><style>{STYLE}</style></head>\n"
        f"<body><main>{nav}\n{body}\n</main></body></html>\n"
    )


def count(number: int) -> str:
    """``2000`` -> ``2 000`` (narrow no-break space: readable, and never split over two lines)."""
    return f"{number:,}".replace(",", "\u202f")


def when(text: str | None) -> str:
    """A record's ISO time as ``2024-05-01 21:03``, in the time zone the record was written in."""
    moment = parse_time(text)
    return moment.strftime("%Y-%m-%d %H:%M") if moment is not None else "?"


def span(start: str | None, end: str | None) -> str:
    """``2024-05-01 21:03 → 06:14 (9 h 11 min)``; the end's date is shown only when it differs."""
    first, last = parse_time(start), parse_time(end)
    if first is None or last is None:
        return when(start if first is not None else end)
    tail = last.strftime("%H:%M") if first.date() == last.date() else last.strftime("%Y-%m-%d %H:%M")
    return f"{when(start)} → {tail} ({duration((last - first).total_seconds())})"


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    if seconds < 60:
        return f"{seconds:.1f} s" if seconds < 10 else f"{seconds:.0f} s"
    minutes = round(seconds / 60)
    return f"{minutes} min" if minutes < 60 else f"{minutes // 60} h {minutes % 60} min"


def generated_at() -> str:
    return datetime.now().astimezone().strftime("%Y-%m-%d %H:%M")
