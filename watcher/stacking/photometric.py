"""Match stage: per-frame exposure and white-balance gains, so that frames agree in brightness and colour.

Cameras meter every frame of a focus stack anew: exposure and white balance drift by a percent or more from frame
to frame. Where the fused result switches between frames (and in flat areas it may switch anywhere), such drift
shows as patches of slightly different brightness and colour. Each frame gets one gain per channel that brings it
to the reference frame, estimated where the reference is well exposed, on heavily smoothed copies, as the median
of per-pixel log ratios (robust to what moved or changed).

Defocus moves light around but keeps its local mean -- in *linear* light. In the gamma-encoded values cameras store,
a blurred bright detail on a dark ground has a higher mean than the sharp one, which would read as a gain. So the
copies are linearised first, the gains are estimated in linear light, and applied to encoded values as
``gain ** (1 / 2.2)`` (exact for a pure power-law encoding; the alignment stage linearises alike).
"""

from __future__ import annotations

import cv2
import numpy as np

from watcher.stacking.align import DISPLAY_GAMMA, linear_light_table, rescale_warp, warp_frame

MATCH_SIDE = 256  # px: the gains are estimated on copies this long on their longer side
_SMOOTHING = 0.03  # Gaussian sigma as a fraction of MATCH_SIDE: wider than most defocus
_DARK, _BRIGHT = 0.005, 0.9  # usable range of the reference's smoothed linear values: away from noise and clipping
_MIN_SAMPLES = 64
GAIN_LIMITS = (0.7, 1.4)  # beyond this a frame differs by more than exposure drift: it is not matched, and says so


def match_copy(pixels: np.ndarray, warp: np.ndarray | None = None) -> np.ndarray:
    """Small smoothed linear-light float32 (h, w, 3) copy in [0, 1] of a frame, for :func:`channel_gains`.

    Parameters
    ----------
    pixels : ndarray, shape (H, W, 3), uint8 or uint16
    warp : ndarray (3, 3), optional
        Reference -> frame coordinates in ``pixels``' geometry: the copy is brought into the reference's geometry
        (at its own small size), so that it can be compared with the reference's copy pixel for pixel.
    """
    linear = _linear(pixels)
    height, width = pixels.shape[:2]
    scale = min(1.0, MATCH_SIDE / max(height, width))
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    small = cv2.resize(linear, size, interpolation=cv2.INTER_AREA).astype(np.float32)
    small *= np.float32(1.0 / 65535)
    if warp is not None:
        small = warp_frame(small, rescale_warp(warp, size[0] / width))
    return cv2.GaussianBlur(small, (0, 0), _SMOOTHING * MATCH_SIDE)


def luma_gain(gains: tuple[float, float, float]) -> float:
    """The gain of the BT.601 luma (grey) of a frame whose (B, G, R) gains are ``gains``."""
    blue, green, red = gains
    return 0.114 * blue + 0.587 * green + 0.299 * red


def _linear(pixels: np.ndarray) -> np.ndarray:
    """Encoded samples -> linear light as uint16 (0..65535), by table."""
    table = linear_light_table(pixels.dtype)
    return cv2.LUT(pixels, table) if pixels.dtype == np.uint8 else table[pixels]


def channel_gains(reference: np.ndarray, frame: np.ndarray,
                  covered: np.ndarray | None = None) -> tuple[float, ...] | None:
    """Per-channel gains ``g`` such that ``g * frame`` matches ``reference`` (both from :func:`match_copy`).

    Parameters
    ----------
    reference, frame : ndarray, shape (h, w, 3), float32 in [0, 1]
        The same view (the frame already aligned to the reference).
    covered : ndarray, shape (h, w), bool, optional
        Pixels the frame really covers.

    Returns
    -------
    tuple of 3 floats (B, G, R), or None
        Gains for the frame's *encoded* values. None when too few pixels are usable or a gain is outside
        :data:`GAIN_LIMITS` (e.g. a frame of something else, or a flash that did not fire): such a frame is used
        as it is.
    """
    usable = np.all((reference > _DARK) & (reference < _BRIGHT) & (frame > 0) & (frame < 1), axis=2)
    if covered is not None:
        usable &= covered
    if int(usable.sum()) < _MIN_SAMPLES:
        return None
    ratios = np.log(reference[usable]) - np.log(frame[usable])  # (n, 3)
    gains = tuple(float(np.exp(np.median(ratios[:, c]) / DISPLAY_GAMMA)) for c in range(3))
    if not all(GAIN_LIMITS[0] <= g <= GAIN_LIMITS[1] for g in gains):
        return None
    return gains
