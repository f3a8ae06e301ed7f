"""A stack's page: the result and its depth map, each frame's share and alignment, warnings, timings."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from pathlib import PurePosixPath

from watcher.report.html import duration, esc, link, page, when
from watcher.report.model import DEPTH_SUFFIX, StackEntry, find_output, redact
from watcher.report.paths import INDEX, depth_thumbnail, scan_folder, scan_key, scan_page, scan_title, stack_page
from watcher.report.svg import frame_colour

_BROWSER_IMAGES = (".jpg", ".jpeg", ".png")  # what every browser shows (not TIFF)


def render_stack(record: Mapping, entry: StackEntry, neighbours: tuple[StackEntry | None, StackEntry | None],
                 exists: Callable[[str], bool]) -> str:
    """The page of one stack, from its full record; ``neighbours`` are the previous and next positions."""
    key = scan_key(entry.record)
    here = scan_folder(key)
    body = [f'<h1>{esc(entry.name)} <span class="{"ok" if entry.status == "ok" else "bad"}">'
            f"{'✓ ok' if entry.status == 'ok' else '✗ failed'}</span></h1>", _pager(here, neighbours)]
    if entry.status == "failed":
        body.append(f'<div class="box bad"><b>Failed:</b> {esc(entry.error or "no reason recorded")}<br>'
                    '<span class="muted">The input files are kept: replace the bad ones and the stack is '
                    "stacked again.</span></div>")
    body.append(_facts(record, entry))
    if entry.warnings:
        items = "".join(f"<li>{esc(w)}</li>" for w in entry.warnings)
        body.append(f'<div class="box warn"><b>Warnings</b><ul>{items}</ul></div>')
    frames = [f for f in record.get("frames") or [] if isinstance(f, Mapping)]
    if entry.status == "ok":
        body.append(_focus(entry))
    body.append(_images(here, record, entry, exists))
    if frames:
        body.append(_frames(frames, entry, record))
    elif record.get("inputs"):
        body.append(_inputs(record["inputs"]))
    if isinstance(record.get("timings"), Mapping):
        body.append(_timings(record["timings"]))
    crumbs = [("All scans", link(here, INDEX)), (scan_title(key), link(here, scan_page(key))), (entry.name, None)]
    return page(f"{entry.name} · focus stacks", "\n".join(part for part in body if part), crumbs=crumbs)


def _pager(here: str, neighbours: tuple[StackEntry | None, StackEntry | None]) -> str:
    previous, following = neighbours
    left = right = ""
    if previous:
        left = f'<a href="{esc(link(here, stack_page(previous.record)))}">← {esc(previous.name)}</a>'
    if following:
        right = f'<a href="{esc(link(here, stack_page(following.record)))}">{esc(following.name)} →</a>'
    return f'<div class="pager"><span>{left}</span><span>{right}</span></div>'


def _facts(record: Mapping, entry: StackEntry) -> str:
    rows = [("finished", when(entry.finished_at)), ("took", duration(entry.seconds))]
    if entry.width and entry.height:
        rows.append(("size", f"{entry.width} × {entry.height} px ({entry.width * entry.height / 1e6:.1f} MP)"))  # noqa: RUF001
    inputs = record.get("inputs") or []
    rows.append(("frames", str(len(record.get("frames") or inputs))))
    if record.get("complete_because"):
        rows.append(("complete because", str(record["complete_because"])))
    if isinstance(record.get("attempts"), int) and record["attempts"] > 1:
        rows.append(("attempts", str(record["attempts"])))
    if isinstance(record.get("worker_peak_rss_mb"), (int, float)):
        rows.append(("peak memory", f"{record['worker_peak_rss_mb']:.0f} MiB"))
    settings = record.get("settings") if isinstance(record.get("settings"), Mapping) else {}
    if settings.get("blend"):
        rows.append(("blend", f"{settings['blend']}, {settings.get('focus_measure', '?')}"))
    if record.get("software"):
        rows.append(("software", str(record["software"])))
    cells = "".join(f"<span>{esc(name)} <b>{esc(redact(value))}</b></span>" for name, value in rows)
    return f'<p class="facts">{cells}</p>'


def _images(here: str, record: Mapping, entry: StackEntry, exists: Callable[[str], bool]) -> str:
    if entry.status != "ok":
        return ""
    folder = PurePosixPath(entry.record).parent
    figures = []
    shown = entry.image if entry.image and entry.image.lower().endswith(_BROWSER_IMAGES) else entry.thumbnail
    if shown:
        size = f' width="{entry.width}" height="{entry.height}"' if entry.width and entry.height else ""
        target = entry.image or shown
        figures.append(f'<figure><a href="{esc(link(here, target))}"><img src="{esc(link(here, shown))}"{size} '
                       f'alt="result of {esc(entry.name)}"></a><figcaption>Result'
                       f"{' (open the full file)' if entry.image else ' (thumbnail; the result file is missing)'}"
                       "</figcaption></figure>")
    else:
        figures.append('<figure><div class="box muted">The result file is not in the results folder.</div></figure>')
    depth = find_output(None, folder, entry.stem + DEPTH_SUFFIX, exists)
    depth_small = depth_thumbnail(entry.record) if exists(depth_thumbnail(entry.record)) else None
    if depth or depth_small:
        figures.append(f'<figure><a href="{esc(link(here, depth or depth_small))}"><img src="'
                       f'{esc(link(here, depth_small or depth))}" alt="depth map of {esc(entry.name)}" '
                       'loading="lazy"></a><figcaption>Depth map: which frame is sharpest where (dark = first '
                       "frame, light = last)</figcaption></figure>")
    mask = _mask(record, folder, exists)
    if mask and shown:
        account = record.get("mask") if isinstance(record.get("mask"), Mapping) else {}
        share, inferred = account.get("share"), account.get("inferred_share")
        numbers = (f": {100 * share:.1f} % object, {100 * inferred:.1f} % of it inferred (no focus detail of its own)"
                   if isinstance(share, (int, float)) and isinstance(inferred, (int, float)) else "")
        figures.append(f'<figure><a href="{esc(link(here, mask))}"><span class="masked"><img src="'
                       f'{esc(link(here, shown))}" alt="" loading="lazy"><img class="mask" src="'
                       f'{esc(link(here, mask))}" alt="object mask of {esc(entry.name)}" loading="lazy"></span></a>'
                       f"<figcaption>Object mask over the result, backdrop darkened{esc(numbers)} (open the mask)"
                       "</figcaption></figure>")
    return f'<div class="images">{"".join(figures)}</div>'


def _mask(record: Mapping, folder: PurePosixPath, exists: Callable[[str], bool]) -> str | None:
    """The stack's object mask (its first output of kind ``mask``), where it is, or None."""
    outputs = record.get("outputs") if isinstance(record.get("outputs"), list) else []
    path = next((o.get("path") for o in outputs if isinstance(o, Mapping) and o.get("kind") == "mask"), None)
    return find_output(path, folder, None, exists) if path else None


def _focus(entry: StackEntry) -> str:
    if entry.metrics() is None:
        return ""
    advice = entry.advice
    if not advice:
        return '<div class="box"><b class="ok">Focus range looks right</b> at this position.</div>'
    items = "".join(f"<li>{esc(a.message)}</li>" for a in advice)
    return f'<div class="box warn"><b>Focus range</b><ul>{items}</ul></div>'


def _frames(frames: list[Mapping], entry: StackEntry, record: Mapping) -> str:
    """One row per frame; the share and focus-change columns only when the record has them, warnings only when
    a frame has some."""
    reference = record.get("reference", {}).get("index") if isinstance(record.get("reference"), Mapping) else None
    shares, changes = entry.shares, entry.changes
    widest = max(shares or [0.0]) or 1.0
    warned = any(frame.get("warnings") for frame in frames)
    head = ['<th class="num">#</th>', "<th>frame</th>"]
    if shares:
        head += ["<th>share of the result</th>", '<th class="num">focus change</th>']
    head += ["<th>alignment</th>", '<th class="num">shift (px)</th>', '<th class="num">scale</th>',
             '<th class="num">rotation</th>', '<th class="num">ECC</th>'] + (["<th>warnings</th>"] if warned else [])
    rows = []
    for index, frame in enumerate(frames):
        cells = [f'<td class="num">{index + 1}</td>', f"<td>{esc(frame.get('name', '?'))}</td>"]
        if shares and changes and index < len(shares):
            colour = frame_colour(index, len(frames))
            change = changes[index]
            cells += [f'<td class="share"><span class="bar" style="width:{80 * shares[index] / widest:.1f}px;'
                      f'background:{colour}"></span> {100 * shares[index]:.1f} %</td>',
                      f'<td class="num">{"" if change is None else f"{change:.2f}"}</td>']
        shift, scale, rotation = _alignment(frame.get("transform"))
        correlation = frame.get("correlation")
        cells += [f"<td>{esc('reference' if index == reference else frame.get('model', ''))}</td>",
                  f'<td class="num">{shift}</td>', f'<td class="num">{scale}</td>', f'<td class="num">{rotation}</td>',
                  f'<td class="num">{f"{correlation:.3f}" if isinstance(correlation, (int, float)) else ""}</td>']
        if warned:
            cells.append(f"<td>{esc('; '.join(redact(str(w)) for w in frame.get('warnings') or []))}</td>")
        rows.append(f"<tr>{''.join(cells)}</tr>")
    return f'<h2>Frames</h2><div class="table"><table><tr>{"".join(head)}</tr>{"".join(rows)}</table></div>'


def _alignment(transform: object) -> tuple[str, str, str]:
    """Shift (px), scale change and rotation of a 3x3 frame-to-reference transform, as table cells."""
    try:
        (a, b, tx), (c, d, ty) = (tuple(float(v) for v in row) for row in transform[:2])  # type: ignore[index]
    except (TypeError, ValueError, IndexError):
        return "", "", ""
    scale = math.sqrt(abs(a * d - b * c))
    rotation = math.degrees(math.atan2(c, a))
    return (f"{_signed(tx, 1)}, {_signed(ty, 1)}", f"{_signed(100 * (scale - 1), 2)} %", f"{_signed(rotation, 2)}°")


def _signed(value: float, digits: int) -> str:
    """``+1.20`` / ``-0.50`` / ``0.00`` (never ``-0.00``)."""
    rounded = round(value, digits)
    return f"{rounded:+.{digits}f}" if rounded else f"{0:.{digits}f}"


def _inputs(inputs: list) -> str:
    rows = "".join(f"<tr><td>{esc(i.get('name', '?'))}</td><td class=\"num\">{_megabytes(i.get('size'))}</td></tr>"
                   for i in inputs if isinstance(i, Mapping))
    return f'<h2>Input files</h2><div class="table"><table class="narrow">{rows}</table></div>'


def _megabytes(size: object) -> str:
    return f"{size / 1e6:.1f} MB" if isinstance(size, int) else "?"


def _timings(timings: Mapping) -> str:
    stages = [(str(stage), float(seconds)) for stage, seconds in timings.items()
              if isinstance(seconds, (int, float)) and stage != "total"]
    if not stages:
        return ""
    longest = max(seconds for _stage, seconds in stages) or 1.0
    rows = "".join(f'<tr><td>{esc(stage)}</td><td class="num">{seconds:.2f} s</td><td><span class="bar" '
                   f'style="width:{120 * seconds / longest:.0f}px"></span></td></tr>' for stage, seconds in stages)
    total = timings.get("total")
    foot = f'<tr><th>total</th><th class="num">{float(total):.2f} s</th><th></th></tr>' if isinstance(
        total, (int, float)) else ""
    return f'<h2>Timings</h2><div class="table"><table class="narrow">{rows}{foot}</table></div>'
