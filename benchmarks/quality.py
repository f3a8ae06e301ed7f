"""Image-quality and alignment metrics for comparing stacking results with ground truth."""

from __future__ import annotations

import cv2
import numpy as np


def _full_scale(a: np.ndarray, b: np.ndarray) -> float:
    """Value range of the common dtype: 255, 65535, or 1.0 for float images in [0, 1]."""
    if a.shape != b.shape or a.dtype != b.dtype:
        raise ValueError(f"images differ: {a.shape} {a.dtype} vs {b.shape} {b.dtype}")
    return float(np.iinfo(a.dtype).max) if np.issubdtype(a.dtype, np.integer) else 1.0


def _crop(image: np.ndarray, crop: float) -> np.ndarray:
    """Drop a border of ``crop`` times the height (rows) and width (columns)."""
    rows, cols = round(crop * image.shape[0]), round(crop * image.shape[1])
    return image[rows : image.shape[0] - rows, cols : image.shape[1] - cols]


def psnr(a: np.ndarray, b: np.ndarray, *, crop: float = 0.03) -> float:
    """Peak signal-to-noise ratio in dB of two images of equal shape and dtype.

    The peak is the dtype's full scale; a border of ``crop`` times the size is
    ignored (registration and warping leave it unreliable). Identical images give inf.
    """
    peak = _full_scale(a, b)
    diff = _crop(a, crop).astype(np.float64) - _crop(b, crop).astype(np.float64)
    mse = float(np.mean(diff**2))
    return float("inf") if mse == 0 else 10.0 * np.log10(peak**2 / mse)


def _luma(image: np.ndarray) -> np.ndarray:
    """BT.601 luma (H, W) float64 of a BGR (H, W, 3) or grey (H, W) image."""
    image = image.astype(np.float64)
    return image if image.ndim == 2 else image @ np.array([0.114, 0.587, 0.299])


def ssim(a: np.ndarray, b: np.ndarray, *, crop: float = 0.03) -> float:
    """Mean structural similarity (Wang et al. 2004) of the luma of two images.

    Gaussian 11x11 window with sigma 1.5, K1 = 0.01, K2 = 0.03, dynamic range the
    dtype's full scale; the SSIM map is averaged without a border of ``crop``
    times the size. Identical images give 1.0.
    """
    peak = _full_scale(a, b)
    x, y = _luma(a), _luma(b)
    c1, c2 = (0.01 * peak) ** 2, (0.03 * peak) ** 2

    def window_mean(image: np.ndarray) -> np.ndarray:
        return cv2.GaussianBlur(image, (11, 11), 1.5, borderType=cv2.BORDER_REFLECT)

    mu_x, mu_y = window_mean(x), window_mean(y)
    var_x = window_mean(x * x) - mu_x**2
    var_y = window_mean(y * y) - mu_y**2
    cov = window_mean(x * y) - mu_x * mu_y
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return float(np.mean(_crop(ssim_map, crop)))


def corner_error_rms(estimated: np.ndarray, true: np.ndarray, shape: tuple[int, ...]) -> float:
    """RMS distance in px between the image corners mapped by two (3, 3) transforms.

    ``shape`` is the image's ``(H, W, ...)``; the corners are the centres of the
    four corner pixels, ``(0, 0)``, ``(W-1, 0)``, ``(0, H-1)`` and ``(W-1, H-1)``.
    """
    height, width = shape[:2]
    corners = np.array(
        [[0, 0, 1], [width - 1, 0, 1], [0, height - 1, 1], [width - 1, height - 1, 1]], float
    ).T
    mapped = [m @ corners for m in (np.asarray(estimated, float), np.asarray(true, float))]
    points = [m[:2] / m[2] for m in mapped]
    return float(np.sqrt(np.mean(np.sum((points[0] - points[1]) ** 2, axis=0))))
