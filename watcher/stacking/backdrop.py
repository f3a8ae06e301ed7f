"""The backdrop's colour, predicted everywhere from the part of it that is surely backdrop (for the object mask).

A backdrop beyond the focus range is out of focus in every frame, hence smooth: its colour at any pixel, also
behind the object, is predicted from the backdrop around it by the engine's pyramid fill
(:func:`watcher.stacking.depth.fill`, normalised convolution at the scale of each gap). How far the sure backdrop
itself strays from that prediction sets the tolerances; a backdrop that strays far (a textured or patterned one,
or an object that fills the frame) is *unpredictable*, and :mod:`watcher.stacking.mask` then makes no decision
by colour.

Colours are OpenCV's 8-bit Lab (``cv2.COLOR_BGR2LAB`` of uint8 BGR: L* scaled to 0..255, a* and b* offset by
128); a distance is |dL*| + |da*| + |db*| with L* in its own 0..100 units, computed in saturating uint8 OpenCV
operations (about 2 ms at 1 MP). Predictions are made on 4 x 4 blocks, a quarter of the mask's resolution.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from watcher.stacking.depth import fill

BLOCK = 4  # px of the mask per block of the predictions: per-pixel tests need no finer backdrop
# A region (a closed gap in the object) is compared with the backdrop predicted from blocks of BLOCK * REGION_BLOCK
# px, so that it is judged against what surrounds the object, not against itself.
REGION_BLOCK = 4
# Less sure backdrop than this share of the mask: nothing to predict from.
MIN_SURE_SHARE = 0.01
# A block counts as sure backdrop when this share of its pixels is (only whole blocks teach the prediction).
FULL_BLOCK = 0.99
# Tolerances: the sure backdrop's own spread from its prediction -- the 99th percentile per pixel, the 95th per
# block (regions are tested by their blocks) -- and never below MIN_TOLERANCE Lab units (a flat backdrop's spread
# is a JPEG's rounding and the vignetting left over by the prediction).
PIXEL_QUANTILE = 99.0
REGION_QUANTILE = 95.0
MIN_TOLERANCE = 6.0
# Beyond this spread (Lab units) the backdrop's colour is not predictable: measured 6 on the plain and cloth
# turntable scenes and on the ring's white paper, 19-67 on the two frame-filling circuit boards.
MAX_TOLERANCE = 25.0
_L1_WEIGHTS = np.array([[100.0 / 255.0, 1.0, 1.0]], np.float32)  # 8-bit L -> L*, a and b as they are


@dataclass(frozen=True)
class BackdropColour:
    """The backdrop's colour predicted over the whole mask, and how well the prediction fits the sure backdrop.

    Attributes
    ----------
    pixel : ndarray, shape (h // BLOCK, w // BLOCK, 3), float32
        Lab predicted from the sure backdrop's blocks around each block (for per-pixel tests).
    region : ndarray, shape (h // BLOCK, w // BLOCK, 3), float32
        Lab predicted from blocks REGION_BLOCK times larger (for tests of whole regions).
    region_distance : ndarray, shape (h // BLOCK, w // BLOCK), uint8
        Each block's mean colour's distance from ``region``.
    pixel_tolerance, region_tolerance : float
        Lab units: distances the sure backdrop itself reaches (per pixel from ``pixel``, per block from
        ``region``).
    """

    pixel: np.ndarray
    region: np.ndarray
    region_distance: np.ndarray
    pixel_tolerance: float
    region_tolerance: float

    @property
    def predictable(self) -> bool:
        """Whether the sure backdrop follows its prediction closely enough to decide anything by colour."""
        return max(self.pixel_tolerance, self.region_tolerance) <= MAX_TOLERANCE


def predict_backdrop(lab: np.ndarray, sure: np.ndarray) -> BackdropColour | None:
    """The backdrop's colour everywhere, from the pixels that are surely backdrop.

    Parameters
    ----------
    lab : ndarray, shape (h, w, 3), uint8
        The result's colour at the mask's resolution, OpenCV 8-bit Lab.
    sure : ndarray, shape (h, w), bool
        Pixels that are surely backdrop.

    Returns
    -------
    BackdropColour, or None when less than MIN_SURE_SHARE of the pixels is sure backdrop.
    """
    height, width = sure.shape
    if np.count_nonzero(sure) < MIN_SURE_SHARE * height * width:
        return None
    blocks = (max(1, width // BLOCK), max(1, height // BLOCK))
    cover = cv2.resize(sure.view(np.uint8) * np.uint8(255), blocks, interpolation=cv2.INTER_AREA)
    cover = cover.astype(np.float32) * np.float32(1 / 255)  # share of each block that is sure backdrop
    sums = cv2.resize(cv2.bitwise_and(lab, lab, mask=sure.view(np.uint8)), blocks, interpolation=cv2.INTER_AREA)
    sums = sums.astype(np.float32)  # mean over each block of the sure pixels' colour, 0 for the others
    pixel = _fill_colour(sums / np.maximum(cover, 1e-3)[..., None], cover)
    regions = (max(1, blocks[0] // REGION_BLOCK), max(1, blocks[1] // REGION_BLOCK))
    region_cover = cv2.resize(cover, regions, interpolation=cv2.INTER_AREA)
    region_mean = cv2.resize(sums, regions, interpolation=cv2.INTER_AREA) / np.maximum(region_cover, 1e-3)[..., None]
    region = cv2.resize(_fill_colour(region_mean, region_cover), blocks, interpolation=cv2.INTER_LINEAR)
    sampled = sure[::BLOCK, ::BLOCK]
    spread = colour_distance(np.ascontiguousarray(lab[::BLOCK, ::BLOCK]), pixel)[sampled]
    region_distance = colour_distance(cv2.resize(lab, blocks, interpolation=cv2.INTER_AREA), region)
    full = cover > FULL_BLOCK
    return BackdropColour(
        pixel=pixel,
        region=region,
        region_distance=region_distance,
        pixel_tolerance=_tolerance(spread, PIXEL_QUANTILE),
        region_tolerance=_tolerance(region_distance[full], REGION_QUANTILE),
    )


def colour_distance(lab: np.ndarray, prediction: np.ndarray) -> np.ndarray:
    """|dL*| + |da*| + |db*| of every pixel of ``lab`` from ``prediction``.

    Parameters
    ----------
    lab : ndarray, shape (h, w, 3), uint8
        OpenCV 8-bit Lab.
    prediction : ndarray, shape (h', w', 3), float32 or uint8
        The same units, any size: resized bilinearly to ``lab``'s.

    Returns
    -------
    ndarray, shape (h, w), uint8
        Lab units, saturating at 255.
    """
    height, width = lab.shape[:2]
    if prediction.dtype != np.uint8:
        prediction = np.clip(prediction + 0.5, 0, 255).astype(np.uint8)
    if prediction.shape[:2] != (height, width):
        prediction = cv2.resize(prediction, (width, height), interpolation=cv2.INTER_LINEAR)
    return cv2.transform(cv2.absdiff(lab, prediction), _L1_WEIGHTS)


def _fill_colour(colour: np.ndarray, cover: np.ndarray) -> np.ndarray:
    """Each channel of ``colour`` (h, w, 3) filled from its whole blocks (``cover`` > FULL_BLOCK) outward."""
    trusted = (cover > FULL_BLOCK).astype(np.float32)
    strength = np.ones_like(trusted)
    return np.stack([fill(np.ascontiguousarray(colour[..., channel]), trusted, strength, default=0.0)
                     for channel in range(3)], axis=2)


def _tolerance(distances: np.ndarray, quantile: float) -> float:
    if distances.size == 0:
        return MIN_TOLERANCE
    return max(MIN_TOLERANCE, float(np.percentile(distances, quantile)))
