"""Synthetic focal stacks that provoke halos, hollow strokes and mottling, rendered by benchmarks/synthetic.py.

* ``strokes``: smooth near-white silkscreen strokes 6-32 px wide (letters, an outline, a line; the real "SW1"
  is about 30 px wide at 2048 px) and bright metal pads on a dark green solder mask with a weak fine texture,
  and a raised black component (two depth levels: decisions at its edge matter). As on a real board, the frame
  in focus has little focus energy inside the strokes or beside them. Defocus reaches 40 px, wider than any
  stroke, and focus breathing is 1 %/frame: the case of glowing halos, ghost bands and hollow strokes.
* ``smooth``: a sky-like gradient, paper and a white turntable (large smooth areas) around a textured object;
  shot plus read noise, and every frame's exposure and white balance off by 1-4 % per channel: the case of
  blotchy flat regions.
* ``long``: 14 frames, the last four focused beyond the scene (even their sharpest point is 3-10 px out of
  focus), 16-bit PNG (or 8-bit JPEG), 1280x1280, 3 px jitter: the case of far-defocused frames left unaligned.

Stroke widths and blur radii are in pixels, so the board looks the same at every size; the layout scales with
the image. Each case renders at 640x480 in a few seconds for the tests.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from benchmarks.synthetic import FocalStack, Layer, load_photo, make_focal_stack, micro_texture, shape_alpha, to_linear

_SUPERSAMPLE = 4  # strokes are drawn at 4x and averaged down: anti-aliased coverage

# Display-encoded BGR colours.
_BOARD = (0.10, 0.22, 0.06)
_TRACE = (0.16, 0.40, 0.10)
_SILKSCREEN = (0.97, 0.98, 0.98)
_PAD = (0.62, 0.80, 0.88)  # tinned copper, a little golden
_PLASTIC = (0.07, 0.07, 0.08)
_SKY_TOP, _SKY_BOTTOM = (0.80, 0.55, 0.30), (0.95, 0.85, 0.75)
_PAPER = (0.80, 0.84, 0.86)
_TURNTABLE = (0.93, 0.93, 0.93)


def drawn_coverage(size: tuple[int, int], draw: Callable[[np.ndarray, int], None]) -> np.ndarray:
    """Anti-aliased (H, W) float32 coverage of what ``draw(canvas, scale)`` paints (255) on a canvas ``scale``
    times larger; ``draw`` multiplies its coordinates and thicknesses by ``scale``."""
    width, height = size
    canvas = np.zeros((height * _SUPERSAMPLE, width * _SUPERSAMPLE), np.uint8)
    draw(canvas, _SUPERSAMPLE)
    return cv2.resize(canvas, size, interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0


def _paint(colour: np.ndarray, coverage: np.ndarray, paint: tuple[float, float, float], grain: np.ndarray) -> None:
    """Composite ``paint`` (display-encoded BGR, times ``grain``) over ``colour`` (linear) in place."""
    layer = to_linear(np.asarray(paint, np.float32)[None, None] * grain[..., None])
    colour += coverage[..., None] * (layer - colour)


def _text(canvas: np.ndarray, scale: int, text: str, origin: tuple[float, float], height: float, thickness: int):
    font = cv2.FONT_HERSHEY_SIMPLEX
    font_scale = height / 22.0  # Hershey simplex capitals are about 22 px tall at scale 1
    org = (round(origin[0] * scale), round(origin[1] * scale))
    cv2.putText(canvas, text, org, font, font_scale * scale, 255, thickness * scale, cv2.LINE_AA)


def strokes_scene(size: tuple[int, int], rng: np.random.Generator) -> list[Layer]:
    """Board (tilted, depth 0.55-1) with traces, pads and silkscreen; a black component on top (depth 0-0.05)."""
    width, height = size
    shape = (height, width)
    u, v = np.linspace(0, 1, width, dtype=np.float32)[None], np.linspace(0, 1, height, dtype=np.float32)[:, None]
    board_depth = np.broadcast_to(0.55 + 0.45 * (0.6 * u + 0.4 * (1 - v)), shape).astype(np.float32)

    # A glossy solder mask over fibreglass: a weak weave and grain, so the board is finely but faintly textured.
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    weave = 1.0 + 0.04 * np.sin(2 * np.pi * x / 6.0) * np.sin(2 * np.pi * y / 6.0)
    board = to_linear(np.asarray(_BOARD, np.float32)[None, None] * (weave * micro_texture(shape, rng, 0.06))[..., None])

    box = (0.32 * width, 0.34 * height, 0.68 * width, 0.82 * height)  # the component's footprint

    def traces(canvas, s):
        for points in (((0.0, 0.2), (0.25, 0.2), (0.32, 0.1), (1.0, 0.1)), ((0.0, 0.9), (0.2, 0.75), (0.3, 0.75)),
                       ((1.0, 0.95), (0.8, 0.8), (0.75, 0.8))):
            pts = np.array([[px * width * s, py * height * s] for px, py in points], np.int32)
            cv2.polylines(canvas, [pts], False, 255, 8 * s, cv2.LINE_AA)

    _paint(board, drawn_coverage(size, traces), _TRACE, micro_texture(shape, rng, 0.1))

    def pads(canvas, s):
        pad_w, pad_h = 0.11 * width, 0.11 * height
        for cx in (box[0] - 0.5 * pad_w - 4, box[2] + 0.5 * pad_w + 4):
            for cy in (box[1] + 0.2 * (box[3] - box[1]), box[1] + 0.8 * (box[3] - box[1])):
                top_left = (round((cx - pad_w / 2) * s), round((cy - pad_h / 2) * s))
                bottom_right = (round((cx + pad_w / 2) * s), round((cy + pad_h / 2) * s))
                cv2.rectangle(canvas, top_left, bottom_right, 255, -1)

    _paint(board, drawn_coverage(size, pads), _PAD, micro_texture(shape, rng, 0.15))

    def silkscreen(canvas, s):
        margin = 0.03 * width
        outline = ((box[0] - margin) * s, (box[1] - margin) * s, (box[2] + margin) * s, (box[3] + margin) * s)
        cv2.rectangle(canvas, (round(outline[0]), round(outline[1])), (round(outline[2]), round(outline[3])),
                      255, 10 * s, cv2.LINE_AA)
        _text(canvas, s, "SW1", (0.36 * width, box[1] - margin - 20), 0.13 * height, 20)
        _text(canvas, s, "R36", (0.04 * width, 0.16 * height), 0.08 * height, 6)
        _text(canvas, s, "C2", (0.76 * width, 0.36 * height), 0.22 * height, 32)
        cv2.line(canvas, (round(0.02 * width * s), round(0.95 * height * s)),
                 (round(0.6 * width * s), round(0.95 * height * s)), 255, 12 * s, cv2.LINE_AA)

    _paint(board, drawn_coverage(size, silkscreen), _SILKSCREEN, micro_texture(shape, rng, 0.005))

    # The component: a black box whose top carries white markings (a ring and a "1").
    corner = 0.04 * width
    qx = np.abs(x - (box[0] + box[2]) / 2) - ((box[2] - box[0]) / 2 - corner)
    qy = np.abs(y - (box[1] + box[3]) / 2) - ((box[3] - box[1]) / 2 - corner)
    rounded_box = np.hypot(np.maximum(qx, 0), np.maximum(qy, 0)) + np.minimum(np.maximum(qx, qy), 0) - corner
    alpha = shape_alpha(rounded_box)
    top = to_linear(np.asarray(_PLASTIC, np.float32)[None, None] * micro_texture(shape, rng, 0.3)[..., None])

    def marking(canvas, s):
        cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        cv2.circle(canvas, (round(cx * s), round(cy * s)), round(0.12 * height * s), 255, 8 * s, cv2.LINE_AA)
        _text(canvas, s, "1", (box[0] + 0.04 * width, box[1] + 0.12 * height), 0.08 * height, 10)

    _paint(top, drawn_coverage(size, marking), _SILKSCREEN, micro_texture(shape, rng, 0.02))
    component_depth = (0.05 * (1 - v) * np.ones_like(u)).astype(np.float32)
    return [Layer(board, None, board_depth), Layer(top, alpha, np.broadcast_to(component_depth, shape).copy())]


def smooth_scene(size: tuple[int, int], rng: np.random.Generator) -> list[Layer]:
    """Sky gradient over paper (depth 1), a white turntable (0.45-0.75) and a textured object on it (0-0.25)."""
    width, height = size
    shape = (height, width)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    t = np.clip((y / height - 0.05) / 0.45, 0, 1)[..., None]
    sky = (1 - t) * np.asarray(_SKY_TOP, np.float32) + t * np.asarray(_SKY_BOTTOM, np.float32)
    # Paper below the horizon, blended over 8 % of the height; a faint fibre grain keeps it real, not textured.
    paper_weight = np.clip((y / height - 0.42) / 0.08, 0, 1)[..., None]
    paper = np.asarray(_PAPER, np.float32) * (1 + 0.03 * (x / width - 0.5))[..., None]
    backdrop = (1 - paper_weight) * sky + paper_weight * paper
    backdrop = to_linear(backdrop * micro_texture(shape, rng, 0.004)[..., None])

    centre_x, centre_y, radius_x, radius_y = 0.5 * width, 0.78 * height, 0.46 * width, 0.2 * height
    disk = np.hypot((x - centre_x) / radius_x, (y - centre_y) / radius_y)
    turntable_colour = np.asarray(_TURNTABLE, np.float32) * (1 - 0.04 * disk**2)[..., None]
    turntable = Layer(
        to_linear(turntable_colour * micro_texture(shape, rng, 0.004)[..., None]),
        shape_alpha((disk - 1.0) * radius_y),
        (0.45 + 0.3 * (1 - np.clip((y - (centre_y - radius_y)) / (2 * radius_y), 0, 1))).astype(np.float32),
    )

    # The object: a rounded blob of a stained-tissue photograph (amber-like), domed toward the camera.
    ox, oy, orx, ory = 0.5 * width, 0.5 * height, 0.17 * width, 0.3 * height
    radial = np.hypot((x - ox) / orx, (y - oy) / ory)
    angle = np.arctan2(y - oy, x - ox)
    outline = radial - (1 + 0.08 * np.cos(3 * angle))
    texture = to_linear(load_photo("ihc", size) * micro_texture(shape, rng, 0.05)[..., None])
    dome = 0.25 * np.clip(radial, 0, 1) ** 2
    obj = Layer(texture, shape_alpha(outline * ory), dome.astype(np.float32))
    return [Layer(backdrop, None, np.ones(shape, np.float32)), turntable, obj]


def long_scene(size: tuple[int, int], rng: np.random.Generator) -> list[Layer]:
    """The coffee photograph on a plane tilted both ways (depth 0-1)."""
    u, v = np.linspace(-1, 1, size[0], dtype=np.float32)[None], np.linspace(-1, 1, size[1], dtype=np.float32)[:, None]
    depth = np.broadcast_to(0.5 + 0.3 * u + 0.2 * v, (size[1], size[0])).astype(np.float32)
    colour = to_linear(load_photo("coffee", size) * micro_texture(depth.shape, rng)[..., None])
    return [Layer(colour, None, depth)]


# Rendering settings of each case; ``size`` and ``dtype`` are the benchmark's, tests pass smaller sizes.
ARTIFACT_CASES: dict[str, dict[str, Any]] = {
    "strokes": {"scene": strokes_scene, "size": (1280, 960), "n_frames": 8, "max_blur_radius": 40.0,
                "scale_step": 0.01, "noise_sigma": 0.004, "shot_noise": 0.0001},
    "smooth": {"scene": smooth_scene, "size": (1280, 960), "n_frames": 8, "max_blur_radius": 16.0,
               "scale_step": 0.004, "noise_sigma": 0.003, "shot_noise": 0.0003, "gain_drift": (0.01, 0.04)},
    "long": {"scene": long_scene, "size": (1280, 1280), "n_frames": 14, "dtype": np.uint16, "jpeg_quality": None,
             "max_blur_radius": 32.0, "focus_range": (0.0, 1.5), "scale_step": 0.003, "max_shift_px": 3.0},
}


def make_artifact_stack(
    name: str, *, size: tuple[int, int] | None = None, dtype: npt.DTypeLike | None = None, seed: int = 0
) -> FocalStack:
    """Render case ``name`` of ``ARTIFACT_CASES`` (optionally at another ``size`` (W, H) or ``dtype``; for
    ``long``, ``dtype=np.uint8`` gives JPEG frames)."""
    if name not in ARTIFACT_CASES:
        raise ValueError(f"unknown case {name!r}; cases: {sorted(ARTIFACT_CASES)}")
    settings = dict(ARTIFACT_CASES[name])
    if size is not None:
        settings["size"] = size
    if dtype is not None:
        settings["dtype"] = dtype
        if np.dtype(dtype) == np.uint8:
            settings.pop("jpeg_quality", None)
    return make_focal_stack(name, seed=seed, **settings)
