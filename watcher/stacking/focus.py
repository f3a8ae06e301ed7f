"""Focus stage: how sharp each pixel of a frame is, as a log-energy score map.

The measures return a local *energy* (squared intensity units) averaged over a ``window`` x ``window`` box. A frame's
score averages that energy's logarithm over a few octaves (:func:`multiscale_score`): one scale alone is easily
fooled by what a defocused frame has at that scale -- the sharp rim of a defocused edge, in-camera sharpening, JPEG
noise in its glow -- which beats the flat board beside a bright stroke in the frame that is in focus there; a mix
of scales is fooled far less (measured on the real PCB stacks: the light added beside strong edges falls from
0.6-0.9 % to 0.1-0.3 % of full scale with three octaves instead of one). Where every scale is fooled, the decision
stage (:mod:`watcher.stacking.depth`) takes over.
"""

from __future__ import annotations

from typing import get_args

import cv2
import numpy as np

from watcher.config import FocusMeasure

MEASURES = get_args(FocusMeasure)  # the names live in the settings model
# Energy floor: far below sensor noise (8-bit noise of 1 level gives ~1e-5), so it only matters on perfectly flat
# (e.g. clipped) areas, where all frames then score the same.
_ENERGY_FLOOR = 1e-10
# Noise floor of each scale, as a percentile of that scale's energy over the frame: energy below it is noise, and
# log(energy + floor) makes every frame score alike there instead of ranking frames by their noise.
_NOISE_PERCENTILE = 10
# Scores are put in the units of a second-derivative measure: defocus by sigma lowers the energy of an edge as
# sigma ** -4 for the Laplacian measures but as sigma ** -2 for the gradient (tenengrad), so a gradient's log
# energy counts twice -- the decision's thresholds then mean the same for every measure.
_LOG_SCALE = {"laplacian_var": 1.0, "sml": 1.0, "tenengrad": 2.0}
# Weight of scale k (k = 0 finest) in the mean: 2 ** (-k / 2). Finer scales place edges more precisely.
_SCALE_DECAY = 0.5


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
    """Natural log of :func:`focus_energy` (float32, same shape), floored on flat areas."""
    energy = focus_energy(grey, measure, window)
    return np.log(np.maximum(energy, _ENERGY_FLOOR, out=energy), out=energy)


def multiscale_score(grey: np.ndarray, measure: str, window: int, scales: int) -> np.ndarray:
    """Weighted mean over ``scales`` octaves of the log focus energy above each octave's noise floor.

    Octave ``k`` is ``grey`` reduced ``k`` times by ``cv2.pyrDown``; its log energy is brought back to full size
    bilinearly. Octave ``k`` weighs ``2 ** (-k / 2)``.

    Parameters
    ----------
    grey : ndarray, shape (h, w), float32 in [0, 1]
    measure, window
        As :func:`focus_energy` (``window`` in pixels of each octave).
    scales : int
        Number of octaves (1 = the finest only); fewer when the image gets smaller than 3 ``window`` s.

    Returns
    -------
    ndarray, shape (h, w), float32
        Log energy (natural log of squared intensity units), comparable between frames of one stack.
    """
    height, width = grey.shape
    total = np.zeros(grey.shape, np.float32)
    weights = 0.0
    level = grey
    for k in range(scales):
        energy = focus_energy(level, measure, window)
        # the floor from every 4th pixel of every 4th row: as good an estimate, 16 times cheaper
        energy += np.float32(np.percentile(energy[::4, ::4], _NOISE_PERCENTILE) + _ENERGY_FLOOR)
        log_energy = np.log(energy, out=energy)
        if log_energy.shape != grey.shape:
            log_energy = cv2.resize(log_energy, (width, height), interpolation=cv2.INTER_LINEAR)
        weight = 2.0 ** (-_SCALE_DECAY * k)
        total += np.float32(weight) * log_energy
        weights += weight
        if min(level.shape) < 6 * window:
            break
        level = cv2.pyrDown(level)
    total *= np.float32(_LOG_SCALE[measure] / weights)
    return total


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


# Gaussian sigmas (px) tried by relative_blur; 0 is "as sharp as the other".
_BLUR_LADDER = (0.0, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0)
_BLUR_BLOCK = 20  # px: blocks in which the sharper image is found and its blur fitted
_BLUR_QUANTILE = 25  # the step's blur: where one of the two is in focus it is smallest, elsewhere larger


def relative_blur(a: np.ndarray, b: np.ndarray) -> float | None:
    """How much more blurred one of two aligned images is than the other, where one of them is in focus.

    In each textured block, the Gaussian sigma that best turns the sharper image into the other is fitted;
    between neighbouring frames of a focus stack that is one focus step's growth of the blur where content is
    in focus in one of them (and more where it is in focus in neither, hence a low quantile).

    Parameters
    ----------
    a, b : ndarray, shape (h, w), float32
        The same view (``b`` already warped into ``a``'s geometry).

    Returns
    -------
    float or None
        Sigma in px of ``a``; None when the images have no textured block.
    """
    height, width = a.shape
    rows, cols = height // _BLUR_BLOCK, width // _BLUR_BLOCK
    if rows == 0 or cols == 0:
        return None
    a = a[: rows * _BLUR_BLOCK, : cols * _BLUR_BLOCK]
    b = b[: rows * _BLUR_BLOCK, : cols * _BLUR_BLOCK]

    def per_block(image: np.ndarray) -> np.ndarray:
        return cv2.resize(image, (cols, rows), interpolation=cv2.INTER_AREA)

    texture = per_block(np.maximum(cv2.Laplacian(a, cv2.CV_32F) ** 2, cv2.Laplacian(b, cv2.CV_32F) ** 2))
    best = np.full((rows, cols), np.inf, np.float32)
    sigma = np.zeros((rows, cols), np.float32)
    blurred_a, blurred_b, done = a, b, 0.0
    for value in _BLUR_LADDER:
        if value > done:  # blur on from the previous step: a Gaussian of sigma s2 is one of s1 then sqrt(s2^2 - s1^2)
            extra = float(np.sqrt(value * value - done * done))
            blurred_a = cv2.GaussianBlur(blurred_a, (0, 0), extra)
            blurred_b = cv2.GaussianBlur(blurred_b, (0, 0), extra)
            done = value
        for misfit in (per_block((blurred_a - b) ** 2), per_block((blurred_b - a) ** 2)):
            better = misfit < best
            best[better] = misfit[better]
            sigma[better] = value
    textured = texture > np.percentile(texture, 50)
    if not textured.any():
        return None
    return float(np.percentile(sigma[textured], _BLUR_QUANTILE))
