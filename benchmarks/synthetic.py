"""Synthetic focal stacks with ground truth, for measuring the stacking engine.

A case is named ``<photo>_<depth>`` (e.g. ``"astronaut_dome"``): a photograph that
ships inside the scikit-image wheel gives the texture, an analytic (or, for the
motorcycle, measured) depth map gives the geometry. From them ``make_focal_stack``
renders what a macro rig writes: per frame a disk-PSF defocus around that frame's
focus plane (in linear light), sensor noise, focus breathing plus rig jitter as a
homography, and a JPEG round trip.

Conventions
-----------
* ``size`` is ``(width, height)`` as in OpenCV; arrays are ``(H, W[, 3])``, BGR.
* Depth is a float32 in [0, 1]; 0 is nearest to the camera. Frame ``i`` focuses
  at ``focus_depths[i]``, increasing with ``i``; its blur radius at a pixel is
  ``blur_scale * |depth - focus_depths[i]|`` pixels.
* ``homographies[i]`` maps truth pixel coordinates ``(x, y, 1)`` to frame-``i``
  pixel coordinates: a truth point ``p`` appears at ``H_i @ p`` in frame ``i``,
  so ``cv2.warpPerspective(truth, H_i, (W, H))`` puts truth into frame-``i``
  geometry.
* ``gains[i]`` scales frame ``i``'s linear light per channel (exposure and white
  balance); the truth has gain 1, as has the middle frame.
"""

from __future__ import annotations

import importlib.util
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np
import numpy.typing as npt

from benchmarks.quality import psnr

# Photographs in skimage/data; grey ones (brick, gravel) are used as three equal channels.
PHOTOS = {
    "astronaut": "astronaut.png",
    "coffee": "coffee.png",
    "chelsea": "chelsea.png",
    "rocket": "rocket.jpg",
    "retina": "retina.jpg",
    "hubble": "hubble_deep_field.jpg",
    "motorcycle": "motorcycle_left.png",
    "ihc": "ihc.png",
    "brick": "brick.png",
    "gravel": "gravel.png",
}
DEPTHS = ("tilt", "dome", "layers", "steps", "saddle", "disparity")
CASES: tuple[str, ...] = (
    "astronaut_dome",
    "coffee_tilt",
    "chelsea_layers",
    "rocket_steps",
    "retina_saddle",
    "motorcycle_disparity",
    "hubble_tilt",
)

# Blur happens in linear light (that is what makes highlights bloom), textures
# are display-encoded; a pure 2.2 power is close enough to sRGB for this.
_GAMMA = 2.2
# Default blur of the most-defocused region: 8 px at 1280x960, scaled with the diagonal.
_MAX_BLUR_AT_REFERENCE = 8.0
_REFERENCE_DIAGONAL = float(np.hypot(1280, 960))
# Textures of the middle and front layers of the "layers" depth: the first two
# that differ from the background photo, so occlusion edges have contrast.
_LAYER_PHOTOS = ("ihc", "coffee", "rocket")


class Layer(NamedTuple):
    """One layer of a scene, composited back to front.

    colour : (H, W, 3) float32 in [0, 1], linear light.
    alpha : (H, W) float32 in [0, 1], or None for an opaque layer.
    depth : (H, W) float32 in [0, 1].
    """

    colour: np.ndarray
    alpha: np.ndarray | None
    depth: np.ndarray


SceneBuilder = Callable[[tuple[int, int], np.random.Generator], list[Layer]]


@dataclass(frozen=True, eq=False)
class FocalStack:
    """A rendered focal stack with its ground truth (see the module docstring)."""

    name: str
    truth: np.ndarray  # (H, W, 3) uint8|uint16 BGR, all in focus, truth coordinates
    depth: np.ndarray  # (H, W) float32 in [0, 1]
    focus_depths: np.ndarray  # (K,) float32, focus-plane depth of each frame
    frames: list[np.ndarray]  # K x (H, W, 3), as written by the camera
    homographies: list[np.ndarray]  # K x (3, 3) float64, truth -> frame pixel coordinates
    oracle: np.ndarray  # (H, W, 3), per pixel the best-focused frame, truth coordinates
    blur_scale: float  # blur radius in px per unit of |depth - focus depth|
    gains: np.ndarray  # (K, 3) float64: each frame's exposure x white-balance gain per channel (B, G, R)
    jpeg_bytes: tuple[bytes, ...] = field(default=(), repr=False)  # encoded frames, if JPEG

    def in_frame_geometry(
        self, image: np.ndarray, index: int, *, interpolation: int = cv2.INTER_CUBIC
    ) -> np.ndarray:
        """Warp a truth-coordinate image (H, W[, C]) into the geometry of frame ``index``.

        Use ``interpolation=cv2.INTER_NEAREST`` for label or depth maps.
        """
        return _warp(image, self.homographies[index], interpolation)

    def true_alignment(self, index: int, reference: int) -> np.ndarray:
        """(3, 3) float64 ``A = H_index @ inv(H_reference)``.

        Maps reference-frame pixel coordinates to frame-``index`` pixel coordinates,
        so ``cv2.warpPerspective(frames[index], A, (W, H), flags=cv2.WARP_INVERSE_MAP)``
        brings frame ``index`` into the reference geometry.
        """
        return self.homographies[index] @ np.linalg.inv(self.homographies[reference])

    def camera_oracle(self, reference: int) -> np.ndarray:
        """The best any stacker can do from the frames as written, in frame ``reference``'s geometry.

        Each pixel comes from the frame whose focus plane is nearest the true depth there, brought into the
        reference geometry with the *true* alignment. Unlike ``oracle`` (frames before warping and JPEG), it
        carries the losses every stacker must live with: JPEG, noise, one resampling.
        """
        size = (self.truth.shape[1], self.truth.shape[0])
        depth = self.in_frame_geometry(self.depth, reference, interpolation=cv2.INTER_NEAREST)
        nearest = np.argmin(np.abs(depth[None] - self.focus_depths[:, None, None]), axis=0)
        composite = np.empty_like(self.frames[reference])
        for i, frame in enumerate(self.frames):
            aligned = cv2.warpPerspective(
                frame, self.true_alignment(i, reference), size,
                flags=cv2.INTER_CUBIC | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REFLECT,
            )
            composite[nearest == i] = aligned[nearest == i]
        return composite


def _warp(image: np.ndarray, homography: np.ndarray, interpolation: int = cv2.INTER_CUBIC) -> np.ndarray:
    # Reflected borders: frames must not get black edges, which no camera writes.
    size = (image.shape[1], image.shape[0])
    return cv2.warpPerspective(image, homography, size, flags=interpolation, borderMode=cv2.BORDER_REFLECT)


def _data_dir() -> Path:
    # Locating the package avoids importing skimage, which takes seconds.
    spec = importlib.util.find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("scikit-image (dev dependency) is needed for its photographs")
    return Path(spec.submodule_search_locations[0]) / "data"


def _cover_crop(shape: tuple[int, ...], size: tuple[int, int]) -> tuple[slice, slice]:
    """Centred crop of an array of ``shape`` to the aspect ratio of ``size`` (W, H)."""
    height, width = shape[:2]
    scale = min(height / size[1], width / size[0])
    crop_h, crop_w = round(size[1] * scale), round(size[0] * scale)
    top, left = (height - crop_h) // 2, (width - crop_w) // 2
    return slice(top, top + crop_h), slice(left, left + crop_w)


def load_photo(key: str, size: tuple[int, int]) -> np.ndarray:
    """Photograph ``PHOTOS[key]`` centre-cropped and resized to ``size`` (W, H).

    Returns (H, W, 3) float32 BGR in [0, 1], display-encoded; grey photos are
    replicated to three channels.
    """
    image = cv2.imread(str(_data_dir() / PHOTOS[key]), cv2.IMREAD_COLOR)
    image = image[_cover_crop(image.shape, size)].astype(np.float32) / 255.0
    interpolation = cv2.INTER_LANCZOS4 if size[0] > image.shape[1] else cv2.INTER_AREA
    return np.clip(cv2.resize(image, size, interpolation=interpolation), 0.0, 1.0)


def micro_texture(shape: tuple[int, int], rng: np.random.Generator, amplitude: float = 0.05) -> np.ndarray:
    """Multiplicative grain (H, W) float32 with mean 1 and standard deviation ``amplitude``.

    Two octaves of band-limited Gaussian noise (about 1 px and 3 px grains), so
    every textured region keeps detail at the scales that defocus removes.
    """
    grain = np.zeros(shape, np.float32)
    for sigma, weight in ((0.7, 0.8), (1.5, 0.6)):
        octave = cv2.GaussianBlur(rng.standard_normal(shape, dtype=np.float32), (0, 0), sigma)
        grain += weight * octave / octave.std()
    return 1.0 + amplitude * grain / grain.std()


def _normalise(values: np.ndarray) -> np.ndarray:
    return ((values - values.min()) / (values.max() - values.min())).astype(np.float32)


def _grid(size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Isotropic coordinates: u in [-1, 1] across the width, v scaled alike."""
    width, height = size
    u = np.linspace(-1.0, 1.0, width, dtype=np.float32)[None, :]
    v = np.linspace(-1.0, 1.0, height, dtype=np.float32)[:, None] * (height / width)
    return u, v


def depth_map(kind: str, size: tuple[int, int]) -> np.ndarray:
    """Analytic depth map (H, W) float32 spanning [0, 1] (0 = near).

    ``kind`` is one of ``"tilt"`` (inclined plane), ``"dome"`` (hemisphere on a
    base plane), ``"steps"`` (five terraces with depth discontinuities) or
    ``"saddle"`` (saddle plus an egg-crate sinusoid: many local extrema).
    """
    u, v = _grid(size)
    if kind == "tilt":
        depth = 0.8 * u + 0.45 * v
    elif kind == "dome":
        depth = -np.sqrt(np.clip(1.0 - (u**2 + v**2) / 0.9**2, 0.0, None))
    elif kind == "steps":
        depth = np.floor(_normalise(0.6 * u + 0.4 * v) * 4.999)
    elif kind == "saddle":
        depth = 0.5 * (u**2 - v**2) + 0.15 * np.sin(3 * np.pi * u) * np.sin(2.5 * np.pi * v)
    else:
        raise ValueError(f"unknown analytic depth {kind!r}")
    return _normalise(np.broadcast_to(depth, (size[1], size[0])))


def disparity_depth(size: tuple[int, int]) -> np.ndarray:
    """Depth (H, W) float32 in [0, 1] from the measured ``motorcycle_disp.npz``.

    Cropped exactly like ``load_photo("motorcycle", size)``; invalid disparities
    take the value of the nearest valid pixel, and the 0.5/99.5 percentiles map
    to depth 1/0 so single outliers do not squash the range.
    """
    disparity = np.load(_data_dir() / "motorcycle_disp.npz")["arr_0"]
    invalid = ~np.isfinite(disparity)
    # With DIST_LABEL_PIXEL every valid pixel gets its own label in raster order.
    _, labels = cv2.distanceTransformWithLabels(
        invalid.astype(np.uint8), cv2.DIST_L2, 5, labelType=cv2.DIST_LABEL_PIXEL
    )
    filled = disparity[~invalid][labels - 1]
    low, high = np.percentile(filled, [0.5, 99.5])
    depth = (high - np.clip(filled, low, high)) / (high - low)
    resized = cv2.resize(
        depth[_cover_crop(depth.shape, size)].astype(np.float32), size, interpolation=cv2.INTER_LINEAR
    )
    return np.clip(resized, 0.0, 1.0)


def shape_alpha(implicit: np.ndarray) -> np.ndarray:
    """Anti-aliased coverage of ``implicit < 0``, using ``f / |grad f|`` as distance in px."""
    gy, gx = np.gradient(implicit)
    return np.clip(0.5 - implicit / np.maximum(np.hypot(gx, gy), 1e-6), 0.0, 1.0).astype(np.float32)


def _layered_scene(
    background: np.ndarray, photo: str, size: tuple[int, int], rng: np.random.Generator
) -> list[Layer]:
    """Tilted far background (depth 0.7-1), an ellipse at 0.45 and a flower at 0 in front."""
    width, height = size
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    ellipse = np.hypot((x - 0.36 * width) / (0.26 * width), (y - 0.58 * height) / (0.30 * height)) - 1.0
    dx, dy = x - 0.64 * width, y - 0.42 * height
    flower = np.hypot(dx, dy) - 0.2 * height * (1.0 + 0.22 * np.cos(5 * np.arctan2(dy, dx)))
    u, v = _grid(size)
    layers = [Layer(background, None, 0.7 + 0.3 * _normalise(np.broadcast_to(u + 0.5 * v, y.shape)))]
    keys = [key for key in _LAYER_PHOTOS if key != photo][:2]
    for key, implicit, depth in zip(keys, (ellipse, flower), (0.45, 0.0), strict=True):
        colour = to_linear(load_photo(key, size) * micro_texture(y.shape, rng)[..., None])
        layers.append(Layer(colour, shape_alpha(implicit), np.full(y.shape, depth, np.float32)))
    return layers


def to_linear(encoded: np.ndarray) -> np.ndarray:
    """Display-encoded values in [0, 1] (clipped) to linear light, float32."""
    return np.power(np.clip(encoded, 0.0, 1.0), _GAMMA, dtype=np.float32)


def _encoded(linear: np.ndarray) -> np.ndarray:
    return np.power(np.clip(linear, 0.0, 1.0), 1.0 / _GAMMA, dtype=np.float32)


def build_scene(name: str, size: tuple[int, int], rng: np.random.Generator) -> list[Layer]:
    """Layers (back to front) of case ``name`` = ``"<photo>_<depth>"`` at ``size`` (W, H)."""
    photo, _, kind = name.partition("_")
    if photo not in PHOTOS or kind not in DEPTHS:
        raise ValueError(
            f"case {name!r} is not <photo>_<depth> with photo in {sorted(PHOTOS)} and depth in {DEPTHS}"
        )
    colour = to_linear(load_photo(photo, size) * micro_texture((size[1], size[0]), rng)[..., None])
    if kind == "layers":
        return _layered_scene(colour, photo, size, rng)
    depth = disparity_depth(size) if kind == "disparity" else depth_map(kind, size)
    return [Layer(colour, None, depth)]


def disk_kernel(radius: float) -> np.ndarray:
    """Pillbox PSF of ``radius`` px, (2n+1, 2n+1) float32 summing to 1.

    Each tap is the fraction of the disk falling on that pixel (8x8 supersampling),
    which anti-aliases the rim.
    """
    if radius < 0.5:  # the disk lies inside the central pixel
        return np.ones((1, 1), np.float32)
    half = int(np.floor(radius + 0.5))
    offsets = (np.arange(8) + 0.5) / 8 - 0.5
    samples = (np.arange(-half, half + 1)[:, None] + offsets[None, :]).ravel()
    inside = np.hypot(samples[:, None], samples[None, :]) <= radius
    kernel = inside.reshape(2 * half + 1, 8, 2 * half + 1, 8).mean(axis=(1, 3))
    return (kernel / kernel.sum()).astype(np.float32)


def _blur_radii(max_radius: float) -> np.ndarray:
    """Radii (px) of the blur bank: 0, then 1 to 3 in 0.5 steps, then 25 % steps.

    A disk below 0.5 px falls on a single pixel, so 0.5 would repeat 0; and
    interpolating between disks is accurate when their radii differ little
    relative to the radius, so large radii can be spaced geometrically.
    """
    radii = [0.0, 1.0, 1.5, 2.0, 2.5, 3.0]
    while radii[-1] < max_radius:
        radii.append(radii[-1] * 1.25)
    return np.array(radii, np.float32)


def defocus(layers: list[Layer], focus_depths: np.ndarray, blur_scale: float) -> list[np.ndarray]:
    """Render the linear-light frame (H, W, 3) float32 of every focus depth.

    Each layer is blurred with a bank of disk radii; per pixel and frame the two
    bank images bracketing ``blur_scale * |depth - focus depth|`` are linearly
    interpolated. Layers with alpha are blurred premultiplied (colour*alpha and
    alpha together) and composited back to front, so a defocused foreground edge
    spreads over what lies behind it, as in real optics.
    """
    deepest = max(float(np.abs(layer.depth - d).max()) for layer in layers for d in focus_depths)
    radii = _blur_radii(blur_scale * deepest)
    bank_index = np.arange(len(radii))
    margin = int(np.ceil(radii[-1])) + 1
    frames: list[np.ndarray] = []
    for layer in layers:
        if layer.alpha is None:
            window = (slice(None), slice(None))
            image = layer.colour
        else:  # blur only the layer's bounding box plus the widest kernel
            rows, cols = np.nonzero(layer.alpha.any(axis=1))[0], np.nonzero(layer.alpha.any(axis=0))[0]
            window = (
                slice(max(rows[0] - margin, 0), rows[-1] + margin + 1),
                slice(max(cols[0] - margin, 0), cols[-1] + margin + 1),
            )
            alpha = layer.alpha[window][..., None]
            image = np.concatenate([layer.colour[window] * alpha, alpha], axis=2)
        # Fractional index into the bank per frame; its integer neighbours get the hat weights.
        positions = []
        for d in focus_depths:
            radius_map = blur_scale * np.abs(layer.depth[window] - d)
            positions.append(np.interp(radius_map, radii, bank_index).astype(np.float32))
        sums = [np.zeros(image.shape, np.float32) for _ in focus_depths]
        for k, radius in enumerate(radii):
            users = [i for i, p in enumerate(positions) if p.min() < k + 1 and p.max() > k - 1]
            if not users:
                continue
            blurred = cv2.filter2D(image, -1, disk_kernel(radius), borderType=cv2.BORDER_REFLECT_101)
            for i in users:
                weight = np.maximum(1.0 - np.abs(positions[i] - k), 0.0)
                cv2.accumulateProduct(cv2.merge([weight] * image.shape[2]), blurred, sums[i])
        if layer.alpha is None:  # an opaque layer hides everything behind it
            frames = sums
        else:
            for frame, blurred in zip(frames, sums, strict=True):
                frame[window] = blurred[..., :3] + (1.0 - blurred[..., 3:]) * frame[window]
    return frames


def frame_homographies(
    n_frames: int,
    size: tuple[int, int],
    rng: np.random.Generator,
    *,
    scale_step: float,
    max_shift_px: float,
    max_rotation_deg: float,
) -> list[np.ndarray]:
    """Per-frame (3, 3) float64 truth -> frame maps about the image centre.

    Frame ``i`` is scaled by ``1 + scale_step * (i - (n_frames - 1) / 2)`` (focus
    breathing), rotated by a uniform angle in +-``max_rotation_deg`` and shifted
    by a vector drawn uniformly from the disk of radius ``max_shift_px``.
    """
    centre = ((size[0] - 1) / 2, (size[1] - 1) / 2)
    homographies = []
    for i in range(n_frames):
        scale = 1.0 + scale_step * (i - (n_frames - 1) / 2)
        angle = rng.uniform(-max_rotation_deg, max_rotation_deg)
        direction = rng.uniform(0.0, 2 * np.pi)
        shift = max_shift_px * np.sqrt(rng.uniform()) * np.array([np.cos(direction), np.sin(direction)])
        homography = np.eye(3)
        homography[:2] = cv2.getRotationMatrix2D(centre, angle, scale)
        homography[:2, 2] += shift
        homographies.append(homography)
    return homographies


def frame_gains(n_frames: int, rng: np.random.Generator, drift: tuple[float, float] | None) -> np.ndarray:
    """(K, 3) float64 per-frame, per-channel gains: 1 +- a fraction drawn from ``drift`` = (low, high).

    The middle frame (``(K - 1) // 2``, the default reference) keeps gain 1: it sets the exposure, as the
    reference frame of a stacker does. The draws come after the geometry's, so adding drift keeps the geometry.
    """
    gains = np.ones((n_frames, 3))
    if drift is not None:
        size = np.abs(rng.uniform(drift[0], drift[1], (n_frames, 3)))
        gains += size * rng.choice([-1.0, 1.0], (n_frames, 3))
        gains[(n_frames - 1) // 2] = 1.0
    return gains


def _quantise(image: np.ndarray, dtype: np.dtype) -> np.ndarray:
    top = np.iinfo(dtype).max
    return np.rint(np.clip(image, 0.0, 1.0) * top).astype(dtype)


def make_focal_stack(
    name: str = "astronaut_dome",
    *,
    size: tuple[int, int] = (1280, 960),
    n_frames: int = 8,
    seed: int = 0,
    dtype: npt.DTypeLike = np.uint8,
    noise_sigma: float = 0.004,
    shot_noise: float = 0.0,
    jpeg_quality: int | None = 90,
    scale_step: float = 0.003,
    max_shift_px: float = 3.0,
    max_rotation_deg: float = 0.2,
    max_blur_radius: float | None = None,
    focus_range: tuple[float, float] = (0.0, 1.0),
    gain_drift: tuple[float, float] | None = None,
    scene: SceneBuilder | None = None,
) -> FocalStack:
    """Render the focal stack of case ``name`` (see ``CASES``; any ``"<photo>_<depth>"`` works).

    Parameters
    ----------
    size : (width, height) in px.
    n_frames : number of frames K; focus depths are the centres of K equal bins of
        the depth range, so every depth is within half a bin of a focus plane.
    seed : scene grain, geometry and noise come from independent streams of this
        seed, so e.g. changing ``noise_sigma`` keeps the same geometry.
    dtype : ``np.uint8`` or ``np.uint16`` (16-bit truth and frames, full precision).
    noise_sigma : Gaussian sensor noise, standard deviation as a fraction of full scale
        (0.004 is about 1 DN at 8 bit).
    shot_noise : signal-dependent noise; variance ``noise_sigma**2 + shot_noise * value``
        with ``value`` in [0, 1].
    jpeg_quality : quality of the JPEG round trip of each frame, None for none;
        ignored for uint16 (JPEG is 8-bit).
    scale_step : focus breathing, relative scale change per frame.
    max_shift_px, max_rotation_deg : rig jitter bounds, drawn per frame.
    max_blur_radius : blur radius (px) of the most-defocused pixel of any frame;
        default 8 px at 1280x960, proportional to the image diagonal.
    focus_range : where the focus planes lie, in units of the scene's depth range
        (0 = nearest point, 1 = farthest); ``(0, 1.5)`` focuses the last frames
        beyond the scene, where nothing is sharp.
    gain_drift : ``(low, high)``: every frame but the middle one (the default
        reference, which sets the exposure) gets, per channel, a gain off by
        a fraction drawn from [low, high] with a random sign, applied in linear
        light: exposure and white balance differing between frames. None: all 1.
    scene : ``scene(size, rng) -> layers`` builds the scene instead of
        ``build_scene(name, ...)``; ``name`` then only names the stack.
    """
    dtype = np.dtype(dtype)
    if dtype not in (np.uint8, np.uint16):
        raise ValueError(f"dtype must be uint8 or uint16, not {dtype}")
    scene_rng, geometry_rng, noise_rng = (
        np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(3)
    )
    layers = build_scene(name, size, scene_rng) if scene is None else scene(size, scene_rng)

    truth_linear = layers[0].colour
    depth = layers[0].depth
    for layer in layers[1:]:  # sharp composite; the front-most layer covering half a pixel owns the depth
        truth_linear = layer.colour * layer.alpha[..., None] + (1.0 - layer.alpha[..., None]) * truth_linear
        depth = np.where(layer.alpha >= 0.5, layer.depth, depth)
    low, high = float(depth.min()), float(depth.max())
    start, stop = focus_range
    bins = start + (stop - start) * (np.arange(n_frames) + 0.5) / n_frames
    focus_depths = (low + (high - low) * bins).astype(np.float32)

    if max_blur_radius is None:
        max_blur_radius = _MAX_BLUR_AT_REFERENCE * float(np.hypot(*size)) / _REFERENCE_DIAGONAL
    blur_scale = max_blur_radius / max(high - focus_depths[0], focus_depths[-1] - low)
    nearest = np.argmin(np.abs(depth[None] - focus_depths[:, None, None]), axis=0)
    homographies = frame_homographies(
        n_frames,
        size,
        geometry_rng,
        scale_step=scale_step,
        max_shift_px=max_shift_px,
        max_rotation_deg=max_rotation_deg,
    )

    gains = frame_gains(n_frames, geometry_rng, gain_drift)

    oracle = np.empty(truth_linear.shape, np.float32)
    frames, encoded = [], []
    use_jpeg = jpeg_quality is not None and dtype == np.uint8
    for i, linear in enumerate(defocus(layers, focus_depths, blur_scale)):
        image = _encoded(linear * gains[i].astype(np.float32))
        sigma = np.sqrt(noise_sigma**2 + shot_noise * image)
        image += sigma * noise_rng.standard_normal(image.shape, dtype=np.float32)
        in_focus = nearest == i
        oracle[in_focus] = image[in_focus]
        frame = _quantise(_warp(image, homographies[i]), dtype)
        if use_jpeg:
            _, data = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality])
            encoded.append(data.tobytes())
            frame = cv2.imdecode(data, cv2.IMREAD_COLOR)
        frames.append(frame)
    return FocalStack(
        name=name,
        truth=_quantise(_encoded(truth_linear), dtype),
        depth=depth,
        focus_depths=focus_depths,
        frames=frames,
        homographies=homographies,
        oracle=_quantise(oracle, dtype),
        blur_scale=float(blur_scale),
        gains=gains,
        jpeg_bytes=tuple(encoded),
    )


def write_stack(stack: FocalStack, folder: Path, *, ext: str = ".jpg", jpeg_quality: int = 95) -> list[Path]:
    """Write the frames as ``<folder>/<name>_<i:02d><ext>`` and return the paths.

    Frames that already went through the JPEG round trip are written with exactly
    those bytes (no second generation loss; ``jpeg_quality`` then does not apply).
    16-bit stacks need a 16-bit format such as ``".png"`` or ``".tif"``.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    is_jpeg = ext.lower() in (".jpg", ".jpeg")
    if is_jpeg and stack.truth.dtype != np.uint8:
        raise ValueError("JPEG is 8-bit: write 16-bit stacks with ext='.png' or '.tif'")
    paths = []
    for i, frame in enumerate(stack.frames):
        path = folder / f"{stack.name}_{i:02d}{ext}"
        if is_jpeg and stack.jpeg_bytes:
            path.write_bytes(stack.jpeg_bytes[i])
        else:
            params = [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality] if is_jpeg else []
            path.write_bytes(cv2.imencode(ext, frame, params)[1].tobytes())
        paths.append(path)
    return paths


def main(argv: list[str]) -> None:
    """Write every case to ``argv[0]/<case>/`` and print its timing and PSNRs."""
    if len(argv) != 1:
        sys.exit("usage: python -m benchmarks.synthetic OUTDIR")
    for name in CASES:
        start = time.perf_counter()
        stack = make_focal_stack(name)
        seconds = time.perf_counter() - start
        folder = Path(argv[0]) / name
        write_stack(stack, folder)
        cv2.imwrite(str(folder / "truth.png"), stack.truth)
        cv2.imwrite(str(folder / "oracle.png"), stack.oracle)
        cv2.imwrite(str(folder / "depth.png"), np.rint(stack.depth * 65535).astype(np.uint16))
        single = [
            psnr(frame, stack.in_frame_geometry(stack.truth, i)) for i, frame in enumerate(stack.frames)
        ]
        print(
            f"{name:22s} {seconds:5.2f} s  best frame {max(single):5.2f} dB  "
            f"oracle {psnr(stack.oracle, stack.truth):5.2f} dB"
        )


if __name__ == "__main__":
    main(sys.argv[1:])
