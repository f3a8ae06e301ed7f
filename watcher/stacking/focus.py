"""Focus stage: how sharp each pixel of a frame is, as a log-energy score map.

All measures return a local *energy* (squared intensity units) averaged over a ``window`` x ``window`` box, so that
``weight_power`` means the same thing for each: weights are ``energy ** power``. Scores are natural logs of that
energy, which keeps the blends' running softmax in a safe numeric range whatever the image content.
"""

from __future__ import annotations

from typing import get_args

import cv2
import numpy as np

from watcher.config import FocusMeasure

MEASURES = get_args(FocusMeasure)  # the names live in the settings model
# Energy floor: far below sensor noise (8-bit noise of 1 level gives ~1e-4), so it only matters on perfectly
# flat (e.g. clipped) areas, where all frames then weigh the same.
_ENERGY_FLOOR = 1e-10


def focus_energy(grey: np.ndarray, measure: str, window: int) -> np.ndarray:
    """Local focus energy of a grey image.

    Parameters
    ----------
    grey : ndarray, shape (h, w), float32 in [0, 1]
    measure : {"laplacian_var", "tenengrad", "sml"}
        ``laplacian_var``: local variance of the 4-neighbour Laplacian. ``tenengrad``: local mean of the squared
        Sobel gradient magnitude. ``sml``: square of the local mean of the modified Laplacian |Lxx| + |Lyy|.
    window : int
        Odd box size in pixels of ``grey``.

    Returns
    -------
    ndarray, shape (h, w), float32 >= 0
    """
    box = (window, window)
    if measure == "laplacian_var":
        lap = cv2.Laplacian(grey, cv2.CV_32F, ksize=1)
        mean = cv2.boxFilter(lap, -1, box)
        energy = cv2.boxFilter(lap * lap, -1, box) - mean * mean
        return np.maximum(energy, 0.0, out=energy)
    if measure == "tenengrad":
        gx = cv2.Sobel(grey, cv2.CV_32F, 1, 0, ksize=3)
        gy = cv2.Sobel(grey, cv2.CV_32F, 0, 1, ksize=3)
        return cv2.boxFilter(gx * gx + gy * gy, -1, box)
    if measure == "sml":
        kernel = np.array([[-1.0, 2.0, -1.0]], np.float32)
        modified = np.abs(cv2.filter2D(grey, -1, kernel)) + np.abs(cv2.filter2D(grey, -1, kernel.T))
        mean = cv2.boxFilter(modified, -1, box)
        return mean * mean
    raise ValueError(f"unknown focus measure {measure!r}; expected one of {MEASURES}")


def focus_score(grey: np.ndarray, measure: str, window: int) -> np.ndarray:
    """Natural log of :func:`focus_energy` (float32, same shape): the blends' per-pixel score."""
    energy = focus_energy(grey, measure, window)
    return np.log(np.maximum(energy, _ENERGY_FLOOR, out=energy), out=energy)


def guided_filter(guide: np.ndarray, source: np.ndarray, radius: int, eps: float) -> np.ndarray:
    """Edge-preserving smoothing of ``source`` following the edges of ``guide`` (He, Sun & Tang 2013).

    Written with box filters because opencv-python-headless has no ximgproc.

    Parameters
    ----------
    guide : ndarray, shape (h, w), float32 in [0, 1]
    source : ndarray, shape (h, w), float32
    radius : int
        Box radius in pixels (window 2 * radius + 1).
    eps : float
        Regularisation in squared guide units: edges with variance well above ``eps`` are kept.
    """
    box = (2 * radius + 1, 2 * radius + 1)
    # Written in place where possible: this runs on a 4 MP map per frame and its temporaries set the
    # pipeline's peak memory.
    mean_i = cv2.boxFilter(guide, -1, box)
    mean_p = cv2.boxFilter(source, -1, box)
    a = cv2.boxFilter(guide * source, -1, box)
    a -= mean_i * mean_p  # covariance of guide and source
    var_i = cv2.boxFilter(guide * guide, -1, box)
    var_i -= mean_i * mean_i
    var_i += np.float32(eps)
    a /= var_i
    del var_i
    mean_p -= a * mean_i  # b
    del mean_i
    out = cv2.boxFilter(a, -1, box)
    out *= guide
    out += cv2.boxFilter(mean_p, -1, box)
    return out
