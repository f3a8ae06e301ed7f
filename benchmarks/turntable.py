"""Synthetic turntable scenes with a known object silhouette, rendered by benchmarks/synthetic.py: the object mask's
ground truth.

An object on a turntable, photographed as a focus stack whose focus planes cover the object's depth (every part of
it is sharp in some frame) while the backdrop lies beyond. The object (layout in px of the 1500 x 1000 scene,
scaled with the size):

* a textured body (the ``chelsea`` photograph with grain): a dome tilted left to right, so different frames are
  sharp in different parts and the silhouette crosses several depths;
* a featureless white label inside it: object without focus detail, to be filled;
* a handle: a ring on the body's right, whose opening shows the backdrop: a hole through the object, to stay open;
* an antenna ``ANTENNA_PX`` wide, leaving the body's top, nearer to the camera towards its tip: a thin part.

Backdrops (``BACKDROPS``, their depth; ``cloth@S`` or ``medium@S``: that backdrop S focus steps beyond the last
frame's plane):

* ``plain``: light-grey paper with vignetting, far out of focus (40-58 px blur);
* ``cloth``: a dark cloth with a weave and soft folds (~5 % contrast) 1.2 steps beyond the last plane (3.6 px blur
  there): faint texture just beyond the focus range;
* ``medium``: the ``brick`` photograph at 40 % contrast, 4.5 steps beyond (13.5 px blur in the last frame);
* ``white``: white paper, the label's own colour: a label the colour cannot tell from an opening;
* ``edge``: plain, and a white band across the body's left silhouette: a featureless patch on the outline;
* ``capnoise``, ``wall``: no object -- a lens cap (black, noise only) and a faintly textured wall far out of focus.

Every scene: 7 frames, 3 px more blur per focus step (at 1500 px), exposure and white balance drifting 1-4 % per
frame and channel, read and shot noise, JPEG 90, 0.3 %/frame focus breathing, +-3 px and 0.2 degrees of jitter.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from benchmarks.artifact_cases import drawn_coverage
from benchmarks.synthetic import FocalStack, Layer, load_photo, make_focal_stack, micro_texture, to_linear

SIZE = (1500, 1000)  # (width, height) the layout is given in
FRAMES = 7
OBJECT_DEPTH = 0.35  # the object's depth span (0 nearest); the focus planes cover [0, OBJECT_DEPTH]
BLUR_PER_STEP = 3.0  # px of blur radius per focus step at SIZE
ANTENNA_PX = 4  # at SIZE: 2 px at half the size, 12 px at 4656 px
STEP = OBJECT_DEPTH / FRAMES
LAST_PLANE = OBJECT_DEPTH * (FRAMES - 0.5) / FRAMES
BACKDROPS = {
    "plain": 1.0,
    "cloth": LAST_PLANE + 1.2 * STEP,
    "medium": LAST_PLANE + 4.5 * STEP,
    "white": 1.0,
    "edge": 1.0,
    "capnoise": 1.0,
    "wall": 1.0,
}
OBJECT_SCENES = ("plain", "cloth", "medium", "white", "edge")
EMPTY_SCENES = ("capnoise", "wall")


@dataclass(frozen=True)
class Scene:
    """A rendered turntable scene.

    Attributes
    ----------
    stack : FocalStack
    truth : ndarray, shape (H, W), bool
        The object (coverage >= 0.5 of the object, the ring's opening excluded), truth coordinates.
    parts : dict of str to ndarray (H, W) bool
        Truth coordinates: ``antenna``, ``label``, ``edge_label``, ``hole`` (the ring's opening), ``body``.
    """

    stack: FocalStack
    truth: np.ndarray
    parts: dict[str, np.ndarray]

    @property
    def reference(self) -> int:
        """The frame whose geometry the engine's result has (``stacking.reference = "middle"``)."""
        return (FRAMES - 1) // 2

    def in_reference(self, mask: np.ndarray) -> np.ndarray:
        """A truth-coordinate bool map (H, W) in the reference frame's geometry."""
        warped = self.stack.in_frame_geometry(mask.astype(np.float32), self.reference, interpolation=cv2.INTER_LINEAR)
        return warped >= 0.5


def make_scene(kind: str, *, size: tuple[int, int] = SIZE, seed: int = 0) -> Scene:
    """Render the scene with backdrop ``kind`` (a key of BACKDROPS, or ``cloth@S`` / ``medium@S``)."""
    parts: dict[str, np.ndarray] = {}
    far = backdrop_depth(kind)

    def build(size: tuple[int, int], rng: np.random.Generator) -> list[Layer]:
        depth = np.full((size[1], size[0]), far, np.float32)
        depth[0, 0] = 0.0  # one pixel at depth 0 pins the scene's depth range, so the focus planes are known
        layers = [Layer(_backdrop(kind.split("@")[0], size, rng), None, depth)]
        if kind in EMPTY_SCENES:
            parts["object"] = np.zeros(depth.shape, bool)
        else:
            layers.append(_object(size, rng, parts, with_edge_label=kind == "edge"))
        return layers

    first_plane = OBJECT_DEPTH * 0.5 / FRAMES
    max_blur = BLUR_PER_STEP / STEP * (size[0] / SIZE[0]) * (far - first_plane)
    # focus_range is in units of the scene's depth range [0, far]; an empty scene is rendered with the object's
    # focus planes all the same
    planes = (0.0, OBJECT_DEPTH) if kind in EMPTY_SCENES else (0.0, OBJECT_DEPTH / far)
    stack = make_focal_stack(f"turntable_{kind}", scene=build, size=size, n_frames=FRAMES, seed=seed,
                             noise_sigma=0.003, shot_noise=0.0003, jpeg_quality=90, scale_step=0.003,
                             max_shift_px=3.0, max_rotation_deg=0.2, gain_drift=(0.01, 0.04),
                             max_blur_radius=max_blur, focus_range=planes)
    return Scene(stack, parts.pop("object"), parts)


def backdrop_depth(kind: str) -> float:
    """Depth of the backdrop of ``kind``; ``cloth@S`` and ``medium@S`` lie S focus steps beyond the last plane."""
    if "@" in kind:
        return LAST_PLANE + float(kind.split("@")[1]) * STEP
    return BACKDROPS[kind]


def _object(size: tuple[int, int], rng: np.random.Generator, parts: dict[str, np.ndarray], *,
            with_edge_label: bool) -> Layer:
    """The object's layer (linear colour, coverage, depth); its parts go into ``parts`` (bool, truth coords)."""
    width, height = size
    shape = (height, width)
    body, ring, hole, antenna, label, edge_label = _shapes(size)
    if not with_edge_label:
        edge_label = np.zeros_like(label)
    sx, sy = width / SIZE[0], height / SIZE[1]
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    # the body: a dome (nearest in its middle) tilted so that its left rim is nearer than its right one
    u, v = (x - 720 * sx) / (300 * sx), (y - 560 * sy) / (380 * sy)
    dome = np.clip(u**2 + v**2, 0, 1.2)
    body_depth = OBJECT_DEPTH * np.clip(0.08 + 0.62 * dome + 0.22 * (u + 1) / 2, 0, 1)
    # the handle at the body's right-rim depth, receding a little to the right
    ring_depth = OBJECT_DEPTH * np.clip(0.75 + 0.2 * (x - 850 * sx) / (380 * sx), 0, 1)
    # the antenna from the body's top (0.6 of the depth span) to its tip (0.1)
    tip = np.clip((240 * sy - y) / (215 * sy), 0, 1)
    antenna_depth = OBJECT_DEPTH * (0.6 - 0.5 * tip)
    texture = to_linear(load_photo("chelsea", size) * micro_texture(shape, rng, 0.05)[..., None])
    ring_texture = to_linear(load_photo("coffee", size) * micro_texture(shape, rng, 0.08)[..., None])
    rod = to_linear(np.array((0.25, 0.25, 0.28), np.float32) * micro_texture(shape, rng, 0.15)[..., None])
    white = to_linear(np.array((0.95, 0.96, 0.96), np.float32) * micro_texture(shape, rng, 0.003)[..., None])
    colour = texture + np.maximum(label, edge_label)[..., None] * (white - texture)
    colour = np.where(((body < 0.5) & (ring > 0))[..., None], ring_texture, colour)
    colour = colour + (antenna * (body < 0.5))[..., None] * (rod - colour)
    alpha = np.clip(np.maximum.reduce([body, ring, antenna]), 0, 1)
    depth = np.where(body >= 0.5, body_depth, np.where(ring >= antenna, ring_depth, antenna_depth))
    depth = np.where((antenna > 0.5) & (body < 0.5), antenna_depth, depth)
    parts.update(object=alpha >= 0.5, antenna=(antenna >= 0.5) & (body < 0.5), label=label >= 0.5,
                 edge_label=edge_label >= 0.5, hole=(hole >= 0.5) & (alpha < 0.5), body=body >= 0.5)
    return Layer(colour.astype(np.float32), alpha.astype(np.float32), depth.astype(np.float32))


def _shapes(size: tuple[int, int]) -> tuple[np.ndarray, ...]:
    """Coverage (float32 in [0, 1]) of the body, the ring, its opening, the antenna, the label and the edge label
    (already limited to the body)."""
    sx, sy = size[0] / SIZE[0], size[1] / SIZE[1]

    def at(x: float, y: float, s: int) -> tuple[int, int]:
        return round(x * sx * s), round(y * sy * s)

    def ellipse(cx: float, cy: float, ax: float, ay: float):
        return lambda canvas, s: cv2.ellipse(canvas, at(cx, cy, s), at(ax, ay, s), 0, 0, 360, 255, -1, cv2.LINE_AA)

    def rectangle(x0: float, y0: float, x1: float, y1: float):
        return lambda canvas, s: cv2.rectangle(canvas, at(x0, y0, s), at(x1, y1, s), 255, -1, cv2.LINE_AA)

    def antenna(canvas: np.ndarray, s: int) -> None:
        cv2.line(canvas, at(640, 240, s), at(470, 25, s), 255, round(ANTENNA_PX * sx * s), cv2.LINE_AA)
        cv2.circle(canvas, at(470, 25, s), round(ANTENNA_PX * 1.5 * sx * s), 255, -1, cv2.LINE_AA)

    def body(canvas: np.ndarray, s: int) -> None:  # a vase: an ellipse and a wider lower half
        ellipse(720, 540, 270, 340)(canvas, s)
        ellipse(720, 680, 300, 200)(canvas, s)

    inside = drawn_coverage(size, body)
    outer = drawn_coverage(size, ellipse(1030, 520, 190, 170))
    inner = drawn_coverage(size, ellipse(1050, 520, 125, 105))
    return (inside, np.clip(outer - inner, 0, 1), np.clip(inner - inside, 0, 1), drawn_coverage(size, antenna),
            drawn_coverage(size, rectangle(560, 500, 760, 660)),
            drawn_coverage(size, rectangle(380, 600, 560, 690)) * inside)


def _backdrop(kind: str, size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """The backdrop's colour, linear light, (H, W, 3) float32."""
    width, height = size
    shape = (height, width)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    vignette = (1 - 0.25 * np.hypot((x - width / 2) / width, (y - height / 2) / height) ** 2)[..., None]
    if kind in ("plain", "white", "edge"):
        paper = np.array((0.94, 0.95, 0.95) if kind == "white" else (0.78, 0.80, 0.82), np.float32)
        colour = paper * vignette * micro_texture(shape, rng, 0.004)[..., None]
    elif kind == "capnoise":
        colour = np.full((height, width, 3), 0.01, np.float32)
    elif kind == "wall":
        gravel = load_photo("gravel", size)
        colour = np.array((0.70, 0.72, 0.75), np.float32) * (1 + 0.3 * (gravel - gravel.mean()))
    elif kind == "cloth":  # threads of 7 and 9 px, folds, fibre grain
        weave = 1 + 0.025 * np.sin(2 * np.pi * x / 7.0) * np.sin(2 * np.pi * y / 9.0)
        folds = cv2.GaussianBlur(rng.standard_normal(shape, dtype=np.float32), (0, 0), 25)
        folds = 1 + 0.04 * folds / folds.std()
        grain = micro_texture(shape, rng, 0.02)
        colour = np.array((0.42, 0.33, 0.30), np.float32) * vignette * (weave * folds * grain)[..., None]
    elif kind == "medium":
        brick = load_photo("brick", size)
        colour = np.array((0.55, 0.62, 0.70), np.float32) * (1 + 0.2 * (brick - brick.mean()) / brick.std())
        colour = colour * micro_texture(shape, rng, 0.03)[..., None]
    else:
        raise ValueError(f"unknown backdrop {kind!r}")
    return to_linear(colour)
