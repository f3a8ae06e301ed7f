"""Align stage: estimate where each frame sits relative to the reference, and warp it there.

Transforms are estimated by pyramid ECC on small grey copies (``align_max_side``), scaled up, and applied once
at full resolution. Frames far apart in focus look too different for ECC, so each frame is aligned to its
*neighbour* (already placed) and the transforms are chained toward the reference.

Every frame also has a *prediction*: focus breathing and rig drift change smoothly along a stack, so the step from
the neighbour is predicted by the step before it (or by a calibration of the same rig). An ECC estimate is accepted
when it is plausible (scale, rotation, shift, perspective of a real step) and fits at least about as well as the
prediction; otherwise the prediction places the frame. This matters for low-detail frames (far out of focus):
every transform near the right one fits them about equally well, so "better than not aligning" is no test for them,
and identity is almost never the right fallback inside a focus stack. Only a frame that neither ECC nor its
neighbours can place is used unaligned, with a warning.

Convention: a warp is a (3, 3) float64 matrix mapping *reference* pixel coordinates to *frame* pixel coordinates
(pixel centres at integers), i.e. what ``cv2.warpPerspective(frame, warp, flags=WARP_INVERSE_MAP)`` expects.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import cv2
import numpy as np

MODELS = ("homography", "affine", "translation")
_CV_MOTION = {
    "homography": cv2.MOTION_HOMOGRAPHY,
    "affine": cv2.MOTION_AFFINE,
    "translation": cv2.MOTION_TRANSLATION,
}
# Between neighbouring frames of a focus stack the content barely moves: focus breathing is < 2 % per step and
# rigs shake by a few pixels. Anything beyond these limits is ECC locking onto noise, not the real motion.
MAX_STEP_SCALE = 0.05  # |scale - 1|
MAX_STEP_ROTATION_DEG = 3.0
MAX_STEP_SHIFT = 0.05  # fraction of the image diagonal, for any corner
MAX_ANISOTROPY = 1.03  # ratio of the affine part's singular values
MAX_PERSPECTIVE = 0.01  # |w - 1| at the image corners
MIN_CORRELATION = 0.5
# An estimate fits "about as well" as the prediction when its misfit (1 - correlation) is at most this factor times
# the prediction's plus a slack: on low-detail frames both are near 1 and differ by noise.
_MISFIT_FACTOR = 1.5
_MISFIT_SLACK = 0.002
_COARSEST_SIDE = 48  # px: ECC needs some structure even on the coarsest level
_CHECK_ITERATIONS = 10
_ECC_BLUR = 5  # px, Gaussian pre-smoothing inside ECC
DISPLAY_GAMMA = 2.2  # sRGB-like encoding of camera JPEGs (and of most 16-bit TIFFs from raw converters)


@dataclass(frozen=True)
class PairAlignment:
    """Result of aligning one frame to its neighbour, at alignment resolution."""

    warp: np.ndarray  # (3, 3) float64: neighbour coords -> frame coords
    model: str  # "homography" | "affine" | "translation" (estimated), "predicted", "calibrated" (the scan's
    # calibration held), or "identity" (not placed)
    correlation: float  # correlation of the chosen warp at alignment resolution (NaN when not placed)
    tried: tuple[str, ...]  # why estimates were not taken (for the record, not a warning)
    warnings: tuple[str, ...]  # only when the frame could not be placed at all


def alignment_image(pixels: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    """Grey float32 copy in linear light, [0, 1], downscaled so its longer side is at most ``max_side``.

    Defocus is a blur of *light*: it spreads a bright edge symmetrically in linear intensity, but in the
    gamma-encoded values cameras store it moves the edge toward the dark side. ECC on encoded values therefore
    mistakes defocus for a small scale change (about 1 px at the corners of a 1 MP frame between the nearest and
    farthest focus here); undoing the encoding first removes that bias. Returns the image and the scale factor
    (small size / full size, <= 1).
    """
    grey = cv2.cvtColor(pixels, cv2.COLOR_BGR2GRAY)
    # Linearise before averaging pixels down, into 16-bit integers (half the memory of float32 at full size).
    table = linear_light_table(pixels.dtype)
    linear = cv2.LUT(grey, table) if grey.dtype == np.uint8 else table[grey]
    height, width = grey.shape
    scale = min(1.0, max_side / max(height, width))
    if scale < 1.0:
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        linear = cv2.resize(linear, size, interpolation=cv2.INTER_AREA)
        scale = size[0] / width
    return linear.astype(np.float32) * np.float32(1.0 / 65535), scale


@functools.cache
def linear_light_table(dtype: np.dtype) -> np.ndarray:
    """Encoded sample value -> linear light, as uint16 (0..65535)."""
    top = np.iinfo(dtype).max
    linear = np.power(np.arange(top + 1, dtype=np.float64) / top, DISPLAY_GAMMA) * 65535.0
    return np.round(linear).astype(np.uint16)


@functools.cache
def display_encoding_table() -> np.ndarray:
    """Linear light (uint16, 0..65535) -> display-encoded uint16: the inverse of :func:`linear_light_table`, for
    frames developed in linear light (raw) that the measuring pass must see as cameras store theirs."""
    encoded = np.power(np.arange(65536, dtype=np.float64) / 65535.0, 1.0 / DISPLAY_GAMMA) * 65535.0
    return np.round(encoded).astype(np.uint16)


def gradient_mask(grey: np.ndarray, keep_percent: float) -> np.ndarray:
    """uint8 mask (255 = use) of the ``keep_percent`` % pixels with the strongest gradient, slightly dilated.

    Flat areas and noise carry no information for ECC but pull the correlation around.
    """
    gx = cv2.Sobel(grey, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(grey, cv2.CV_32F, 0, 1, ksize=3)
    magnitude = cv2.magnitude(gx, gy)
    threshold = np.percentile(magnitude, 100.0 - keep_percent)
    mask = (magnitude >= threshold).astype(np.uint8) * 255
    return cv2.dilate(mask, np.ones((3, 3), np.uint8))


def estimate_pair(
    template: np.ndarray,
    moving: np.ndarray,
    *,
    levels: int,
    keep_percent: float,
    prediction: np.ndarray | None = None,
) -> PairAlignment:
    """Warp from ``template`` coords to ``moving`` coords by pyramid ECC, checked against a prediction.

    Parameters
    ----------
    template, moving : ndarray, shape (h, w), float32 in [0, 1]
        Grey alignment images of the neighbour already placed and of the frame to place.
    levels : int
        Pyramid levels (1 = full alignment resolution only).
    keep_percent : float
        Share of template pixels (strongest gradients) that ECC uses, in percent.
    prediction : ndarray (3, 3), optional
        Where the neighbours say the frame is (the previous step repeated, or a calibration): ECC starts there,
        an estimate must fit about as well, and it places the frame when no estimate does. None: nothing is
        known (ECC starts at the identity, and a frame no model fits is used unaligned, with a warning).
    """
    shape = template.shape
    start = prediction if prediction is not None else np.eye(3)
    mask = gradient_mask(template, keep_percent)
    baseline = _correlation(template, _warped(moving, start), mask)
    tried: list[str] = []
    for model in MODELS:
        try:
            warp, correlation = _pyramid_ecc(template, moving, keep_percent, levels, model, _restrict(start, model))
        except cv2.error:
            tried.append(f"{model}: ECC did not converge")
            continue
        problem = implausibility(warp, shape)
        if problem is None and not _fits_as_well(correlation, baseline):
            what = "the prediction" if prediction is not None else "not aligning"
            problem = f"correlation {correlation:.3f} is worse than {what} ({baseline:.3f})"
        if problem is None:
            return PairAlignment(warp, model, float(correlation), tuple(tried), ())
        tried.append(f"{model}: rejected, {problem}")
    if prediction is not None:
        return PairAlignment(prediction, "predicted", baseline, tuple(tried), ())
    return PairAlignment(np.eye(3), "identity", float("nan"), tuple(tried),
                         ("no model fits and nothing predicts this frame: used unaligned",))


def check_step(template: np.ndarray, moving: np.ndarray, step: np.ndarray, *, keep_percent: float) -> float:
    """How far (px of the alignment images, worst corner) ECC moves a known ``step`` when it starts there.

    The cheap check of a calibration: a few iterations of an affine ECC at half the alignment resolution, where a
    step that still holds barely moves and a rig that was bumped (a shift), or a focus range that changed (a
    scale), shows at once; an affine model's corners are far steadier than a homography's for this. Returns
    ``inf`` when ECC cannot converge.
    """
    half_template, half_moving = cv2.pyrDown(template), cv2.pyrDown(moving)
    scale = half_template.shape[1] / template.shape[1]
    start = rescale_warp(step, scale)
    criteria = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, _CHECK_ITERATIONS, 1e-4)
    try:
        _, found = cv2.findTransformECCWithMask(
            half_template, half_moving, gradient_mask(half_template, keep_percent),
            np.full(half_moving.shape, 255, np.uint8), _restrict(start, "affine"), cv2.MOTION_AFFINE,
            criteria, _ECC_BLUR,
        )
    except cv2.error:
        return float("inf")
    moved = rescale_warp(_as_3x3(found.astype(np.float64)), 1.0 / scale)
    step = _as_3x3(_restrict(step, "affine").astype(np.float64))  # compared as the affine ECC saw it
    height, width = template.shape
    corners = _corners(width, height)
    a, b = corners @ step.T, corners @ moved.T
    return float(np.max(np.hypot(*(a[:, :2] / a[:, 2:] - b[:, :2] / b[:, 2:]).T)))


def _fits_as_well(correlation: float, baseline: float) -> bool:
    return correlation >= MIN_CORRELATION and 1.0 - correlation <= _MISFIT_FACTOR * (1.0 - baseline) + _MISFIT_SLACK


def implausibility(warp: np.ndarray, shape: tuple[int, int]) -> str | None:
    """Why ``warp`` cannot be a real step between neighbouring frames of ``shape`` (h, w), or None if it can."""
    height, width = shape
    affine = warp[:2, :2] / warp[2, 2]
    singular = np.linalg.svd(affine, compute_uv=False)
    scale = math.sqrt(abs(np.linalg.det(affine)))
    if not np.all(np.isfinite(warp)) or singular[-1] <= 0:
        return "degenerate transform"
    if abs(scale - 1.0) > MAX_STEP_SCALE:
        return f"scale {scale:.3f}"
    if singular[0] / singular[-1] > MAX_ANISOTROPY:
        return f"anisotropy {singular[0] / singular[-1]:.3f}"
    rotation = math.degrees(math.atan2(affine[1, 0] - affine[0, 1], affine[0, 0] + affine[1, 1]))
    if abs(rotation) > MAX_STEP_ROTATION_DEG:
        return f"rotation {rotation:.2f} deg"
    corners = _corners(width, height)
    mapped = corners @ warp.T
    if np.any(np.abs(mapped[:, 2] - 1.0) > MAX_PERSPECTIVE):
        return "perspective too strong"
    shift = np.max(np.hypot(*(mapped[:, :2] / mapped[:, 2:] - corners[:, :2]).T))
    if shift > MAX_STEP_SHIFT * math.hypot(width, height):
        return f"corner shift {shift:.1f} px"
    return None


def rescale_warp(warp: np.ndarray, factor: float) -> np.ndarray:
    """Express ``warp`` in coordinates of an image ``factor`` times the size (pixel centres kept aligned)."""
    offset = 0.5 * factor - 0.5
    to_new = np.array([[factor, 0.0, offset], [0.0, factor, offset], [0.0, 0.0, 1.0]])
    return to_new @ warp @ np.linalg.inv(to_new)


def warp_frame(pixels: np.ndarray, warp: np.ndarray) -> np.ndarray:
    """Resample ``pixels`` (H, W, C) into the reference geometry (same size and dtype).

    Borders the frame does not cover are filled by replicating its edge; :func:`coverage` tells the blend
    which pixels those are, so that they get no weight and are filled from frames that do cover them.
    """
    pixels = np.asarray(pixels)  # a raw frame developed where it is read: all of it
    if np.allclose(warp, np.eye(3), atol=1e-9):
        return pixels
    height, width = pixels.shape[:2]
    flags = cv2.INTER_CUBIC | cv2.WARP_INVERSE_MAP
    if np.allclose(warp[2], (0.0, 0.0, 1.0), atol=1e-12):
        return cv2.warpAffine(pixels, warp[:2], (width, height), flags=flags, borderMode=cv2.BORDER_REPLICATE)
    return cv2.warpPerspective(pixels, warp, (width, height), flags=flags, borderMode=cv2.BORDER_REPLICATE)


def warp_block(pixels: np.ndarray, warp: np.ndarray, rows: slice, cols: slice) -> np.ndarray:
    """Rows ``rows`` and columns ``cols`` of :func:`warp_frame`'s result, computed alone (same values).

    Lets a stack be fused strip by strip without ever holding a whole warped frame. ``pixels`` may also be a raw
    frame that is developed where it is read (:class:`~watcher.stacking.raw.RawPixels`): only the part of it the
    block maps to is then asked for, with the margin bicubic interpolation reads.
    """
    shift = np.array([[1.0, 0.0, cols.start], [0.0, 1.0, rows.start], [0.0, 0.0, 1.0]])
    block = warp @ shift
    size = (cols.stop - cols.start, rows.stop - rows.start)
    if not isinstance(pixels, np.ndarray):
        pixels, block = _source_region(pixels, block, size)
    flags = cv2.INTER_CUBIC | cv2.WARP_INVERSE_MAP
    if np.allclose(block[2], (0.0, 0.0, 1.0), atol=1e-12):
        return cv2.warpAffine(pixels, block[:2], size, flags=flags, borderMode=cv2.BORDER_REPLICATE)
    return cv2.warpPerspective(pixels, block, size, flags=flags, borderMode=cv2.BORDER_REPLICATE)


def _source_region(pixels, block: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """The part of ``pixels`` a block of ``size`` (w, h) warped by ``block`` reads, and the warp into that part.

    The block's corners bound what it maps to (a projective map keeps the block convex); bicubic interpolation
    reads 1 px before and 2 px after each position (one more each side for OpenCV's fixed-point coordinates).
    Clamped to the frame, where replicating the region's edge is replicating the frame's.
    """
    height, width = pixels.shape[:2]
    corners = _corners(*size) @ block.T
    xy = corners[:, :2] / corners[:, 2:]
    left = min(max(int(np.floor(xy[:, 0].min())) - 2, 0), width - 1)
    top = min(max(int(np.floor(xy[:, 1].min())) - 2, 0), height - 1)
    right = max(min(int(np.ceil(xy[:, 0].max())) + 3, width), left + 1)
    bottom = max(min(int(np.ceil(xy[:, 1].max())) + 3, height), top + 1)
    to_region = np.array([[1.0, 0.0, -left], [0.0, 1.0, -top], [0.0, 0.0, 1.0]])
    return pixels[top:bottom, left:right], to_region @ block


def coverage(warp: np.ndarray, shape: tuple[int, int]) -> np.ndarray | None:
    """Bool mask (H, W) of reference pixels the warped frame really covers; None when it covers all of them."""
    height, width = shape
    mapped = _corners(width, height) @ warp.T
    xy = mapped[:, :2] / mapped[:, 2:]
    inside = (xy[:, 0] >= 0) & (xy[:, 0] <= width - 1) & (xy[:, 1] >= 0) & (xy[:, 1] <= height - 1)
    if inside.all():  # the warp is projective, so the covered region is convex: corners inside => all inside
        return None
    ones = np.full((height, width), 255, np.uint8)
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    covered = cv2.warpPerspective(ones, warp, (width, height), flags=flags, borderMode=cv2.BORDER_CONSTANT)
    # Only pixels whose whole interpolation footprint lies inside the frame count as covered.
    return cv2.erode(covered, np.ones((5, 5), np.uint8)) == 255


def _corners(width: int, height: int) -> np.ndarray:
    return np.array([[0, 0, 1], [width - 1, 0, 1], [0, height - 1, 1], [width - 1, height - 1, 1]], float)


def _restrict(warp: np.ndarray, model: str) -> np.ndarray:
    """Starting matrix in the form ECC expects for ``model`` (2x3 float32 unless homography)."""
    if model == "homography":
        return (warp / warp[2, 2]).astype(np.float32)
    start = np.eye(2, 3, dtype=np.float32)
    if model == "affine":
        start[:] = (warp[:2] / warp[2, 2]).astype(np.float32)
    else:
        start[:, 2] = (warp[:2, 2] / warp[2, 2]).astype(np.float32)
    return start


def _as_3x3(matrix: np.ndarray) -> np.ndarray:
    full = np.eye(3)
    full[: matrix.shape[0]] = matrix
    return full


def _pyramid_ecc(
    template: np.ndarray, moving: np.ndarray, keep_percent: float, levels: int, model: str, start: np.ndarray
) -> tuple[np.ndarray, float]:
    pyramid = [(template, moving)]
    while len(pyramid) < levels and min(pyramid[-1][0].shape) >= 2 * _COARSEST_SIDE:
        pyramid.append((cv2.pyrDown(pyramid[-1][0]), cv2.pyrDown(pyramid[-1][1])))
    warp = rescale_warp(_as_3x3(start), pyramid[-1][0].shape[1] / template.shape[1])
    correlation = float("nan")
    for level in range(len(pyramid) - 1, -1, -1):
        tpl, mov = pyramid[level]
        if level < len(pyramid) - 1:
            warp = rescale_warp(warp, tpl.shape[1] / pyramid[level + 1][0].shape[1])
        # The mask is made per level: strong edges differ with scale, and a full-size mask shrunk by
        # nearest-neighbour becomes a scatter of pixels that makes ECC diverge.
        template_mask = gradient_mask(tpl, keep_percent)
        moving_mask = np.full(mov.shape, 255, np.uint8)
        # Finer levels start from the coarser level's answer and converge in a few steps (measured: more
        # iterations or a tighter epsilon change corner errors by < 0.001 px).
        iterations = 50 if level == len(pyramid) - 1 else 20
        criteria = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, iterations, 1e-5)
        correlation, found = cv2.findTransformECCWithMask(
            tpl, mov, template_mask, moving_mask, _restrict(warp, model), _CV_MOTION[model], criteria, _ECC_BLUR
        )
        warp = _as_3x3(found.astype(np.float64))
    return warp, float(correlation)


def _warped(moving: np.ndarray, warp: np.ndarray) -> np.ndarray:
    """``moving`` resampled into the template's geometry by ``warp`` (template coords -> moving coords)."""
    if np.allclose(warp, np.eye(3), atol=1e-12):
        return moving
    height, width = moving.shape
    return cv2.warpPerspective(moving, warp, (width, height), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                               borderMode=cv2.BORDER_REPLICATE)


def _correlation(template: np.ndarray, moving: np.ndarray, mask: np.ndarray) -> float:
    """ECC correlation of the two images as they are (the score of the prediction, or of not aligning).

    Smoothed like ECC smooths its inputs (``gaussFiltSize`` 5), so the two scores are comparable.
    """
    blur = (_ECC_BLUR, _ECC_BLUR)
    return float(cv2.computeECC(cv2.GaussianBlur(template, blur, 0), cv2.GaussianBlur(moving, blur, 0), mask))
