"""The index (all scans) and a scan's page (a grid of its positions): what went wrong first, then the rest."""

from __future__ import annotations

import os
from collections.abc import Sequence

from watcher.focus_range import Advice, usual_count
from watcher.report.html import count, duration, esc, generated_at, link, page, span
from watcher.report.model import ScanSummary, StackEntry, median_seconds, notes, time_key
from watcher.report.paths import INDEX, scan_folder, scan_page, scan_title, stack_page
from watcher.report.svg import frame_colour, share_chart

RECENT_SCANS = 30  # shown as cards on the index; older scans get one line each


def render_index(summaries: Sequence[ScanSummary]) -> str:
    """``index.html``: totals, then a card for each recent scan (those with failures first), then a line for
    each older one, so that the page stays small after months of scans."""
    latest = sorted(summaries, key=lambda s: time_key(s.finished_at or s.started_at), reverse=True)
    recent, older = latest[:RECENT_SCANS], latest[RECENT_SCANS:]
    recent.sort(key=lambda s: s.failed == 0)
    totals = {name: sum(getattr(s, name) for s in summaries) for name in ("ok", "failed", "pending", "warned")}
    starts = [s.started_at for s in summaries if s.started_at]
    ends = [s.finished_at for s in summaries if s.finished_at]
    body = ["<h1>Focus stacks</h1>",
            f'<p class="sub">{count(len(summaries))} scan{"s" if len(summaries) != 1 else ""}'
            + (f" · {esc(span(min(starts, key=time_key), max(ends, key=time_key)))}" if starts and ends else "")
            + f" · updated {esc(generated_at())}</p>"]
    body.append('<div class="totals">'
                f'<div><b>{count(sum(totals[k] for k in ("ok", "failed", "pending")))}</b>stacks</div>'
                f'<div class="ok"><b>{count(totals["ok"])}</b>ok</div>'
                f'<div class="{"bad" if totals["failed"] else "muted"}"><b>{count(totals["failed"])}</b>failed</div>'
                f'<div class="wait"><b>{count(totals["pending"])}</b>pending</div>'
                f'<div class="{"warn" if totals["warned"] else "muted"}"><b>{count(totals["warned"])}</b>'
                "with warnings</div></div>")
    if not summaries:
        body.append('<p class="box">No stacks yet: this page fills in as stacks finish.</p>')
    body.append('<div class="scans">')
    body.extend(_scan_card(summary) for summary in recent)
    body.append("</div>")
    if older:
        body.append(f"<h2>Older scans ({count(len(older))})</h2><ul>")
        body.extend(f'<li><a href="{esc(link("", scan_page(s.key)))}">{esc(scan_title(s.key))}</a> '
                    f'<span class="muted">{esc(span(s.started_at, s.finished_at))}</span> · {count(s.ok)} ok'
                    + (f' · <span class="bad">{count(s.failed)} failed</span>' if s.failed else "") + "</li>"
                    for s in older)
        body.append("</ul>")
    return page("Focus stacks", "\n".join(body))


def _scan_card(summary: ScanSummary) -> str:
    here = ""  # the index lives at the top of the results folder
    target = link(here, scan_page(summary.key))
    if summary.thumbnail:
        picture = f'<img src="{esc(link(here, summary.thumbnail))}" alt="" loading="lazy">'
    else:
        picture = '<div class="noimg"></div>'
    lines = [f"<h3>{esc(scan_title(summary.key))}</h3>", _meter(summary),
             f'<p><span class="ok">{count(summary.ok)} ok</span>'
             + (f' · <span class="bad">{count(summary.failed)} failed</span>' if summary.failed else "")
             + (f' · <span class="wait">{count(summary.pending)} pending</span>' if summary.pending else "")
             + (f' · <span class="warn">{count(summary.warned)} with warnings</span>' if summary.warned else "")
             + (f' · <span class="muted">{esc(span(summary.started_at, summary.finished_at))}</span>'
                if summary.started_at else "") + "</p>"]
    for name, reason, _record in summary.failures:
        lines.append(f'<p class="bad">✗ {esc(name)}: {esc(_short(_without_name(name, reason)))}</p>')
    if summary.failed > len(summary.failures):
        lines.append(f'<p class="bad">… and {count(summary.failed - len(summary.failures))} more failed</p>')
    lines.extend(f'<p class="warn">⚠ {esc(message)}</p>' for message in summary.advice)
    css = "scan bad" if summary.failed else "scan"
    # The whole card is the link: a big target on a phone; failures and advice are readable without a click.
    return f'<a class="{css}" href="{esc(target)}">{picture}<div>{"".join(lines)}</div></a>'


def _meter(summary: ScanSummary) -> str:
    total = max(1, summary.total)
    spans = "".join(f'<span class="{css}" style="width:{100 * value / total:.2f}%"></span>'
                    for css, value in (("ok", summary.ok), ("bad", summary.failed), ("wait", summary.pending))
                    if value)
    return f'<div class="meter" title="ok / failed / pending">{spans}</div>'


def render_scan(key: str, entries: Sequence[StackEntry], scan_level: Sequence[Advice]) -> str:
    """A scan's page: summary, focus-range advice (``scan_level``) and chart, the failures, then every position
    as a tile."""
    here = scan_folder(key)
    title = scan_title(key)
    summary_of = {status: sum(1 for e in entries if e.status == status) for status in ("ok", "failed", "pending")}
    starts = [e.started_at for e in entries if e.started_at]
    ends = [e.finished_at for e in entries if e.finished_at]
    typical = median_seconds(entries)
    facts = [f"{count(len(entries))} positions", f'<span class="ok">{count(summary_of["ok"])} ok</span>']
    if summary_of["failed"]:
        facts.append(f'<span class="bad">{count(summary_of["failed"])} failed</span>')
    if summary_of["pending"]:
        facts.append(f'<span class="wait">{count(summary_of["pending"])} pending</span>')
    if starts and ends:
        facts.append(esc(span(min(starts, key=time_key), max(ends, key=time_key))))
    if typical is not None:
        facts.append(f"{esc(duration(typical))} per stack (median)")
    body = [f"<h1>{esc(title)}</h1>", f'<p class="sub">{" · ".join(facts)}</p>']
    failed = [e for e in entries if e.status == "failed"]
    if failed:
        items = "".join(f'<li><a href="{esc(link(here, stack_page(e.record)))}">{esc(e.name)}</a>: '
                        f"{esc(e.error or 'no reason recorded')}</li>" for e in failed)
        body.append(f'<div class="box bad"><b>{count(len(failed))} failed</b><ul class="failures">{items}</ul></div>')
    body.append(_focus_section(entries, scan_level))
    body.append("<h2>Positions</h2>")
    body.append(_grid(here, entries, scan_level))
    crumbs = [("All scans", link(here, INDEX)), (title, None)]
    return page(f"{title} · focus stacks", "\n".join(part for part in body if part), crumbs=crumbs)


def _focus_section(entries: Sequence[StackEntry], scan_level: Sequence[Advice]) -> str:
    measured = [(e, m) for e in entries if (m := e.metrics()) is not None]
    if not measured:
        return ""
    if scan_level:
        items = "".join(f"<li>{esc(a.message)}</li>" for a in scan_level)
        verdict = f'<div class="box warn"><ul>{items}</ul></div>'
    else:
        verdict = ('<div class="box"><b class="ok">Focus range looks right</b>: no end frame takes over, no frame '
                   "repeats or goes unused.</div>")
    frames = usual_count([m for _e, m in measured])
    usual = [m.shares for _e, m in measured if m.count == frames]
    legend = "".join(f'<i style="background:{frame_colour(i, frames)}"></i>{i + 1}' for i in range(frames))
    first, last = measured[0][0].name, measured[-1][0].name
    chart = (f'<div class="chart">{share_chart(usual)}</div>'
             f'<p class="legend">Each frame\'s share of the result, position by position ({esc(first)} … '
             f"{esc(last)}); frames, nearest at the bottom:{legend}</p>")
    return f"<h2>Focus range</h2>{verdict}{chart}"


def _grid(here: str, entries: Sequence[StackEntry], scan_level: Sequence[Advice]) -> str:
    prefix = _common_prefix([e.name for e in entries])
    sized = next((e for e in entries if e.width and e.height), None)
    ratio = f' style="--ar:{sized.width}/{sized.height}"' if sized else ""
    tiles = [_tile(here, entry, entry.name[len(prefix):] or entry.name, notes(entry, scan_level)) for entry in entries]
    return f'<div class="grid"{ratio}>{"".join(tiles)}</div>'


def _tile(here: str, entry: StackEntry, label: str, notes: int) -> str:
    picture = f'<img src="{esc(link(here, entry.thumbnail))}" alt="" loading="lazy">' if entry.thumbnail else ""
    badge = ""
    if entry.status == "failed":
        inside = f'<div class="ph">✗ {esc(_short(_without_name(entry.name, entry.error or "failed"), 90))}</div>'
    elif entry.status == "pending":  # a stack being stacked again keeps its last thumbnail, dimmed
        inside = picture.replace("<img ", '<img class="dim" ') or '<div class="ph"></div>'
        badge = '<span class="badge wait">pending</span>'
    else:
        inside = picture or '<div class="ph">no thumbnail</div>'
        badge = f'<span class="badge warn" title="warnings">⚠ {notes}</span>' if notes else ""
    css = {"ok": "tile", "failed": "tile bad", "pending": "tile pending"}[entry.status]
    tooltip = esc(entry.name if entry.status != "failed" else f"{entry.name}: {entry.error or ''}")
    content = f'{inside}{badge}<span class="label">{esc(label)}</span>'
    if entry.stamp == (0, 0):  # pending, never stacked: nothing to open yet
        return f'<div class="{css}" title="{tooltip}">{content}</div>'
    return f'<a class="{css}" href="{esc(link(here, stack_page(entry.record)))}" title="{tooltip}">{content}</a>'


def _common_prefix(names: list[str]) -> str:
    """Shared start of the names up to its last separator (``scan01_``), so that tiles show what differs."""
    if len(names) < 2:
        return ""
    prefix = os.path.commonprefix(names)  # noqa: RUF071 - character by character is the point: scan01_0
    cut = max(prefix.rfind(sep) for sep in "_-. ")
    return prefix[:cut + 1] if cut >= 0 else ""


def _without_name(name: str, reason: str) -> str:
    """``scan01_007_fs03.jpg: truncated`` -> ``fs03.jpg: truncated`` where the stack's name is already shown."""
    return (reason[len(name):].lstrip("_-. ") or reason) if reason.startswith(name) else reason


def _short(text: str, limit: int = 160) -> str:
    first = text.strip().splitlines()[0] if text.strip() else ""
    return first if len(first) <= limit else first[:limit - 1] + "…"
