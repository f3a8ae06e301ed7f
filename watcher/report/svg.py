"""The scan page's chart, in a few lines of inline SVG: each frame's share of the result across positions.

Stacked areas, one per frame, nearest frame at the bottom: a band that swells at many positions is a frame
doing the work of the range beyond it (the range stops short); a band that vanishes is a frame wasted.
"""

from __future__ import annotations

from collections.abc import Sequence

# viridis at 9 stops: perceptually even, readable by the colour-blind, light and dark backgrounds alike.
_VIRIDIS = ("#440154", "#472d7b", "#3b528b", "#2c728e", "#21918c", "#28ae80", "#5ec962", "#addc30", "#fde725")
MAX_COLUMNS = 240  # more positions are averaged in groups: the page stays small whatever the scan's size


def frame_colour(index: int, count: int) -> str:
    """Colour of frame ``index`` of ``count`` (nearest dark violet, farthest yellow)."""
    if count <= 1:
        return _VIRIDIS[4]
    where = index / (count - 1) * (len(_VIRIDIS) - 1)
    low = int(where)
    high = min(low + 1, len(_VIRIDIS) - 1)
    mix = where - low
    rgb = [round(int(_VIRIDIS[low][k:k + 2], 16) * (1 - mix) + int(_VIRIDIS[high][k:k + 2], 16) * mix)
           for k in (1, 3, 5)]
    return "#" + "".join(f"{c:02x}" for c in rgb)


def columns(series: Sequence[Sequence[float]], limit: int = MAX_COLUMNS) -> list[list[float]]:
    """``series`` (positions x frames) averaged in consecutive groups down to at most ``limit`` columns."""
    count = len(series)
    if count <= limit:
        return [list(values) for values in series]
    merged = []
    for column in range(limit):
        group = series[column * count // limit:(column + 1) * count // limit]
        merged.append([sum(values) / len(group) for values in zip(*group)])
    return merged


def share_chart(series: Sequence[Sequence[float]], *, width: int = 720, height: int = 110) -> str:
    """Inline SVG of per-position frame shares.

    Parameters
    ----------
    series : sequence of sequences of float, shape (positions, frames)
        Each position's shares (each in [0, 1], summing to 1), positions in scan order.
    """
    data = columns(series)
    if not data:
        return ""
    frames = len(data[0])
    step = width / len(data)
    parts = [f'<svg viewBox="0 0 {width} {height}" role="img" xmlns="http://www.w3.org/2000/svg" '
             f'aria-label="share of the result per frame across {len(series)} positions">']
    lower = [0.0] * len(data)
    for frame in range(frames):
        upper = [low + values[frame] for low, values in zip(lower, data)]
        top = []
        for column, value in enumerate(upper):
            y = _y(value, height)
            top += [f"{column * step:.1f},{y}", f"{(column + 1) * step:.1f},{y}"]
        bottom = []
        for column in range(len(data) - 1, -1, -1):
            y = _y(lower[column], height)
            bottom += [f"{(column + 1) * step:.1f},{y}", f"{column * step:.1f},{y}"]
        parts.append(f'<path fill="{frame_colour(frame, frames)}" d="M{" L".join(top + bottom)}Z"/>')
        lower = upper
    for fraction in (0.25, 0.5, 0.75):
        y = _y(fraction, height)
        parts.append(f'<line x1="0" x2="{width}" y1="{y}" y2="{y}" stroke="#fff" stroke-opacity=".45" '
                     'stroke-dasharray="4 4"/>')
    parts.append("</svg>")
    return "".join(parts)


def _y(share: float, height: int) -> str:
    return f"{height * (1.0 - min(1.0, max(0.0, share))):.1f}"
