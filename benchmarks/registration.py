"""Independent image registration for the benchmarks: bring frames and other tools' results into one geometry.

The artifact measures of real stacks (benchmarks/quality.py) compare a result with its own frames and with
focus-stack's output, pixel for pixel, so all of them must sit in the reference frame's geometry. This is done
here, not with the engine's own transforms: the engine is what is being measured, and the baseline must not move
when the engine changes (``benchmarks.artifacts --against``).

Convention, as in watcher/stacking/align.py: a warp is a (3, 3) float64 matrix mapping *reference* pixel
coordinates to *moving-image* pixel coordinates, i.e. what ``cv2.warpPerspective(moving, warp,
flags=WARP_INVERSE_MAP)`` expects.
"""

from __future__ import annotations

import cv2
import numpy as np

_MAX_SIDE = 1024  # px: ECC on a copy this size; enough for sub-pixel accuracy at full size
_LEVELS = 4
_GAMMA = 2.2  # defocus blurs light: compare in linear light, or blur looks like a shift of edges


def _grey_linear(image: np.ndarray, scale: float) -> np.ndarray:
    """Grey float32 copy in linear light, [0, 1], resized by ``scale``."""
    top = float(np.iinfo(image.dtype).max) if np.issubdtype(image.dtype, np.integer) else 1.0
    grey = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    grey = np.power(grey.astype(np.float32) / top, _GAMMA)
    if scale != 1.0:
        grey = cv2.resize(grey, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    return grey


def _scaled(warp: np.ndarray, factor: float) -> np.ndarray:
    """The same warp expressed in coordinates scaled by ``factor``."""
    s = np.diag([factor, factor, 1.0])
    return s @ warp @ np.linalg.inv(s)


def ecc_homography(
    moving: np.ndarray, fixed: np.ndarray, *, start: np.ndarray | None = None, max_side: int = _MAX_SIDE
) -> tuple[np.ndarray, float]:
    """Homography (3, 3) float64 from ``fixed`` pixel coordinates to ``moving`` ones, and the ECC correlation.

    Pyramid ECC (coarse to fine, ``_LEVELS`` levels) on grey linear-light copies whose longer side is at most
    ``max_side``. ``moving`` and ``fixed`` are (H, W[, 3]) images of any integer dtype and may differ in size
    (e.g. a result cropped by another tool); ``start`` is an initial guess in full-size coordinates.
    """
    scale = min(1.0, max_side / max(fixed.shape[:2]))
    fixed_small, moving_small = _grey_linear(fixed, scale), _grey_linear(moving, scale)
    warp = _scaled(np.eye(3) if start is None else np.asarray(start, np.float64), scale)
    correlation = float("nan")
    for level in range(_LEVELS - 1, -1, -1):
        factor = 0.5**level
        template = cv2.resize(fixed_small, None, fx=factor, fy=factor, interpolation=cv2.INTER_AREA)
        image = cv2.resize(moving_small, None, fx=factor, fy=factor, interpolation=cv2.INTER_AREA)
        level_warp = _scaled(warp, factor).astype(np.float32)
        criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 100, 1e-6)
        correlation, level_warp = cv2.findTransformECC(
            template, image, level_warp, cv2.MOTION_HOMOGRAPHY, criteria, None, 5
        )
        warp = _scaled(level_warp.astype(np.float64), 1.0 / factor)
    return _scaled(warp, 1.0 / scale), float(correlation)


def chain_to_reference(frames: list[np.ndarray], reference: int) -> list[np.ndarray]:
    """Warps (reference -> frame ``i``) for every frame of a focus stack, by ECC between neighbours.

    Frames far apart in focus look too different to register directly, so each frame is registered to its
    neighbour nearer the reference and the warps are chained; each step starts from the previous step's warp
    (focus breathing repeats along the stack).
    """
    warps: list[np.ndarray | None] = [None] * len(frames)
    warps[reference] = np.eye(3)
    for side in (range(reference + 1, len(frames)), range(reference - 1, -1, -1)):
        step = np.eye(3)
        for i in side:
            neighbour = i - 1 if i > reference else i + 1
            step, _ = ecc_homography(frames[i], frames[neighbour], start=step)
            warps[i] = step @ warps[neighbour]
    return warps


def warp_into(image: np.ndarray, warp: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """``image`` brought into the reference geometry of ``size`` (W, H), and a bool (H, W) mask of the pixels
    it covers (False where the warp reaches outside ``image``, less a 2 px margin)."""
    flags = cv2.INTER_CUBIC | cv2.WARP_INVERSE_MAP
    warped = cv2.warpPerspective(image, warp, size, flags=flags, borderMode=cv2.BORDER_REPLICATE)
    inside = np.full(image.shape[:2], 255, np.uint8)
    covered = cv2.warpPerspective(inside, warp, size, flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP)
    return warped, cv2.erode(covered, np.ones((5, 5), np.uint8)) > 0
