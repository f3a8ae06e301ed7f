"""Image-quality and alignment metrics for comparing stacking results with ground truth, and artifact measures
(halos, hollow strokes, mottling, detail) that compare a result with its own frames instead."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import NamedTuple

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


# ---------------------------------------------------------------------------------------------------------------
# Artifacts: halos beside strong edges, hollow strokes, mottled flat regions, and detail.
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ArtifactScales:
    """Sizes (px, at the image's own resolution) and levels (fractions of full scale) of the artifact measures.

    The defaults suit 1-4 MP frames whose strongest defocus spreads a bright edge over some tens of pixels.
    """

    edge_sigma: float = 2.0  # px: Gaussian scale at which edges are found (fine texture averages out)
    min_step: float = 0.25  # an edge is strong when the step across it is at least this (luma, [0, 1])
    band: tuple[float, float] = (3.0, 32.0)  # px from a strong edge: where halos live (full-reference)
    halo_band: tuple[float, float] = (8.0, 32.0)  # px: the same, clear of the light map's own smoothing
    floor_radius: int = 48  # px: half-side of the opening that finds the local dark floor beside edges
    background: float = 0.05  # the baseline is background where its light is at most this above that floor
    glow_sigma: float = 2.0  # px: glow is smooth; this removes most noise, and the band starts clear of it
    stroke_radius: int = 28  # px: bright structures narrower than 2x this are strokes (letters, lines)
    rim: tuple[float, float] = (2.0, 4.0)  # px inside a stroke from its strong edge
    interior: float = 6.0  # px from the strong edge and beyond: a stroke's interior
    mottle_sigmas: tuple[float, float] = (3.0, 15.0)  # px: band-pass for blotches a few to tens of px across
    flat_window: int = 15  # px: window of the local standard deviation that decides flatness
    flat_threshold: float = 0.01  # luma std (fraction of full scale) below which a window is flat
    tile: int = 96  # px: tiles within which one frame is taken as "the frame in focus there"


def unit_luma(image: np.ndarray) -> np.ndarray:
    """BT.601 luma (H, W) float32 in [0, 1] of a BGR (H, W, 3) or grey (H, W) image of any integer dtype."""
    top = float(np.iinfo(image.dtype).max) if np.issubdtype(image.dtype, np.integer) else 1.0
    return (_luma(image) / top).astype(np.float32)


def edge_step(luma: np.ndarray, sigma: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Estimated step height (H, W) float32 across each pixel, and the gradient (gx, gy) it comes from.

    For an ideal step of height h, the gradient of the Gaussian-smoothed image peaks at h / (sigma sqrt(2 pi));
    multiplying back gives the step in luma units, so a threshold on it means "an edge of at least this
    contrast", whatever ``sigma``.
    """
    smooth = cv2.GaussianBlur(luma, (0, 0), sigma, borderType=cv2.BORDER_REFLECT)
    gx = cv2.Sobel(smooth, cv2.CV_32F, 1, 0, ksize=3, scale=1 / 8)
    gy = cv2.Sobel(smooth, cv2.CV_32F, 0, 1, ksize=3, scale=1 / 8)
    return cv2.magnitude(gx, gy) * np.float32(sigma * np.sqrt(2 * np.pi)), gx, gy


class EdgeRegions(NamedTuple):
    """Where each pixel lies relative to the strong edges of an image, all (H, W)."""

    edges: np.ndarray  # bool: on a strong edge
    distance: np.ndarray  # float32: px to the nearest strong-edge pixel
    dark_side: np.ndarray  # bool: on the darker side of that nearest edge pixel


def _ridge(step: np.ndarray, gx: np.ndarray, gy: np.ndarray) -> np.ndarray:
    """Pixels where ``step`` peaks across the edge, i.e. along the gradient (Canny's non-maximum suppression)."""
    direction = (np.rint(np.arctan2(gy, gx) / (np.pi / 4)).astype(int)) % 4  # 0: across columns, 2: rows
    padded = np.pad(step, 1, mode="edge")
    height, width = step.shape
    ridge = np.zeros(step.shape, bool)
    for index, (dy, dx) in enumerate(((0, 1), (1, 1), (1, 0), (1, -1))):
        ahead = padded[1 + dy : 1 + dy + height, 1 + dx : 1 + dx + width]
        behind = padded[1 - dy : 1 - dy + height, 1 - dx : 1 - dx + width]
        ridge |= (direction == index) & (step >= ahead) & (step > behind)
    return ridge


def edge_regions(step: np.ndarray, gx: np.ndarray, gy: np.ndarray, min_step: float) -> EdgeRegions:
    """Strong edges (``step >= min_step``, thinned to the line where the step peaks), the distance to them and
    which side of them each pixel is on. Thin lines make distances mean the same for every edge contrast."""
    edges = (step >= min_step) & _ridge(step, gx, gy)
    if not edges.any():
        far = np.full(step.shape, np.inf, np.float32)
        return EdgeRegions(edges, far, np.zeros(step.shape, bool))
    distance, labels = cv2.distanceTransformWithLabels(
        (~edges).astype(np.uint8), cv2.DIST_L2, 5, labelType=cv2.DIST_LABEL_PIXEL
    )
    # DIST_LABEL_PIXEL numbers the edge pixels in raster order, from 1.
    edge_y, edge_x = np.nonzero(edges)
    nearest_y, nearest_x = edge_y[labels - 1], edge_x[labels - 1]
    y, x = np.indices(step.shape)
    along = (x - nearest_x) * gx[nearest_y, nearest_x] + (y - nearest_y) * gy[nearest_y, nearest_x]
    return EdgeRegions(edges, distance, along < 0)


def band_psnr(image: np.ndarray, truth: np.ndarray, scales: ArtifactScales = ArtifactScales()) -> float:
    """PSNR in dB, over the pixels ``scales.band`` px from the strong edges of ``truth`` (both sides).

    Halos, ghost bands and hollow stroke interiors all live there; the rest of the image, where most pixels
    are, hides them in a whole-image PSNR. Images are (H, W[, 3]) of one dtype; a 3 % border is ignored.
    """
    peak = _full_scale(image, truth)
    regions = edge_regions(*edge_step(unit_luma(truth), scales.edge_sigma), scales.min_step)
    band = (regions.distance >= scales.band[0]) & (regions.distance <= scales.band[1])
    band = _crop(band, 0.03)
    diff = _crop(image, 0.03).astype(np.float64) - _crop(truth, 0.03).astype(np.float64)
    mse = float(np.mean(diff[band] ** 2))
    return float("inf") if mse == 0 else 10.0 * np.log10(peak**2 / mse)


class ArtifactMaps(NamedTuple):
    """Per-pixel maps (H, W) float32 of one image, from which the artifact measures are means over regions."""

    step: np.ndarray  # edge step height (luma), see edge_step
    gx: np.ndarray  # gradient of the edge-scale smoothed luma, per px
    gy: np.ndarray
    light: np.ndarray  # brightness (mean of the channels) smoothed at glow_sigma
    above_floor: np.ndarray  # light above the local dark floor (white top-hat of light, floor_radius)
    lift: np.ndarray  # light above the surroundings of a stroke (white top-hat of light, stroke_radius)
    mottle: np.ndarray  # band-pass energy summed over the three channels, (fraction of full scale)^2
    gradient2: np.ndarray  # squared gradient magnitude of the lightly smoothed luma, per px^2
    roughness: np.ndarray  # local standard deviation of the edge-scale smoothed luma


def _tophat(image: np.ndarray, radius: int) -> np.ndarray:
    # A square structuring element: separable, so fast at any size.
    kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (2 * radius + 1, 2 * radius + 1))
    return cv2.morphologyEx(image, cv2.MORPH_TOPHAT, kernel, borderType=cv2.BORDER_REPLICATE)


def _gradient2(luma: np.ndarray) -> np.ndarray:
    """Squared gradient (per px^2) of the luma lightly smoothed (sigma 1 px, against noise and JPEG blocks)."""
    fine = cv2.GaussianBlur(luma, (0, 0), 1.0, borderType=cv2.BORDER_REFLECT)
    gx = cv2.Sobel(fine, cv2.CV_32F, 1, 0, ksize=3, scale=1 / 8)
    gy = cv2.Sobel(fine, cv2.CV_32F, 0, 1, ksize=3, scale=1 / 8)
    return gx * gx + gy * gy


def artifact_maps(image: np.ndarray, scales: ArtifactScales = ArtifactScales()) -> ArtifactMaps:
    """The per-pixel maps of a BGR (H, W, 3) image of any integer dtype (see ArtifactMaps)."""
    luma = unit_luma(image)
    step, gx, gy = edge_step(luma, scales.edge_sigma)
    colour = image.astype(np.float32) / np.float32(np.iinfo(image.dtype).max)
    band_pass = cv2.GaussianBlur(colour, (0, 0), scales.mottle_sigmas[0]) - cv2.GaussianBlur(
        colour, (0, 0), scales.mottle_sigmas[1]
    )
    light = cv2.GaussianBlur(colour, (0, 0), scales.glow_sigma).mean(axis=2)
    smooth = cv2.GaussianBlur(luma, (0, 0), scales.edge_sigma)
    window = (scales.flat_window, scales.flat_window)
    mean = cv2.blur(smooth, window)
    roughness = np.sqrt(np.maximum(cv2.blur(smooth * smooth, window) - mean * mean, 0.0))
    return ArtifactMaps(
        step=step,
        gx=gx,
        gy=gy,
        light=light,
        above_floor=_tophat(light, scales.floor_radius),
        lift=_tophat(light, scales.stroke_radius),
        mottle=np.einsum("hwc,hwc->hw", band_pass, band_pass),
        gradient2=_gradient2(luma),
        roughness=roughness,
    )


def tile_energy(gradient2: np.ndarray, tile: int) -> np.ndarray:
    """Mean of ``gradient2`` (H, W) over each ``tile`` x ``tile`` tile, (ceil(H/tile), ceil(W/tile)) float64."""
    rows = np.add.reduceat(gradient2.astype(np.float64), np.arange(0, gradient2.shape[0], tile), axis=0)
    sums = np.add.reduceat(rows, np.arange(0, gradient2.shape[1], tile), axis=1)
    counts = np.outer(
        np.diff(np.r_[np.arange(0, gradient2.shape[0], tile), gradient2.shape[0]]),
        np.diff(np.r_[np.arange(0, gradient2.shape[1], tile), gradient2.shape[1]]),
    )
    return sums / counts


def _tiles_to_pixels(tiles: np.ndarray, shape: tuple[int, int], tile: int) -> np.ndarray:
    return np.repeat(np.repeat(tiles, tile, axis=0), tile, axis=1)[: shape[0], : shape[1]]


def paste_tiles(into: ArtifactMaps | None, maps: ArtifactMaps, owned: np.ndarray, tile: int) -> ArtifactMaps:
    """``into`` with the tiles marked in ``owned`` (rows, cols) bool replaced by those of ``maps``.

    Maps are computed on each whole frame and only then cut into tiles, so tile seams never show as edges.
    """
    where = _tiles_to_pixels(owned, maps.step.shape, tile)
    if into is None:
        into = ArtifactMaps(*(np.zeros_like(m) for m in maps))
    for target, source in zip(into, maps, strict=True):
        target[where] = source[where]
    return into


class ArtifactRegions(NamedTuple):
    """The regions (H, W) bool in which the artifact measures average; found on the baseline, not the result."""

    halo_band: np.ndarray  # dark background beside strong edges, scales.halo_band px away from them
    far_background: np.ndarray  # dark background farther from strong edges than any halo reaches
    rim: np.ndarray  # inside bright strokes, scales.rim px from their strong edges
    interior: np.ndarray  # inside bright strokes, scales.interior px or more from their strong edges
    flat: np.ndarray  # flat in every frame, away from anything that is not
    textured: np.ndarray  # not flat in the baseline
    baseline_light: np.ndarray  # float32: the baseline's light, against which halo measures added light


def artifact_regions(
    baseline: ArtifactMaps, roughest: np.ndarray, valid: np.ndarray, scales: ArtifactScales = ArtifactScales()
) -> ArtifactRegions:
    """Regions of the measures, from the baseline's maps and ``roughest`` (H, W), the largest roughness of any
    frame at each pixel; ``valid`` (H, W) bool marks the pixels every compared image covers."""
    regions = edge_regions(baseline.step, baseline.gx, baseline.gy, scales.min_step)
    distance = regions.distance
    background = (baseline.above_floor < scales.background) & valid
    strokes = _with_interior((baseline.lift >= scales.min_step) & ~regions.dark_side & valid, distance, scales)
    margin = int(np.ceil(3 * scales.mottle_sigmas[1]))
    flat = (roughest < scales.flat_threshold).astype(np.uint8)
    flat = cv2.erode(flat, np.ones((2 * margin + 1, 2 * margin + 1), np.uint8), borderValue=0) > 0
    return ArtifactRegions(
        halo_band=regions.dark_side & (distance >= scales.halo_band[0]) & (distance <= scales.halo_band[1])
        & background,
        far_background=background & (distance > 2 * scales.halo_band[1]),
        rim=strokes & (distance >= scales.rim[0]) & (distance <= scales.rim[1]),
        interior=strokes & (distance >= scales.interior),
        flat=flat & valid,
        textured=(baseline.roughness >= scales.flat_threshold) & valid,
        baseline_light=baseline.light,
    )


def _with_interior(bright: np.ndarray, distance: np.ndarray, scales: ArtifactScales) -> np.ndarray:
    """The connected parts of ``bright`` that have an interior (specks and texture grains have none)."""
    count, labels = cv2.connectedComponents(bright.astype(np.uint8), connectivity=8)
    has_interior = np.zeros(count, bool)
    has_interior[np.unique(labels[bright & (distance >= scales.interior)])] = True
    has_interior[0] = False
    return has_interior[labels]


def halo(maps: ArtifactMaps, regions: ArtifactRegions) -> float:
    """Glow beside strong edges: mean light added over the baseline (its positive part) on the dark background
    beside strong edges; % of full scale. Light a defocused frame spread around a bright stroke or pad raises
    it; the baseline scores 0. Both are smoothed at ``glow_sigma``, so noise and texture hardly count, and an
    overall exposure difference (the median difference on the background far from strong edges) is taken off.
    """
    difference = maps.light - regions.baseline_light
    exposure = float(np.median(difference[regions.far_background])) if regions.far_background.any() else 0.0
    return 100.0 * float(np.mean(np.maximum(difference[regions.halo_band] - exposure, 0.0)))


def hollowness(maps: ArtifactMaps, regions: ArtifactRegions) -> float:
    """How much less a bright stroke's interior stands out than its rim: 1 - lift(interior) / lift(rim), in %
    of the rim's contrast (lift: light above the stroke's surroundings). A grey, hollow interior raises it; the
    level of solid strokes depends on the scene (rims catch light from both sides of thin strokes, pads and
    highlights have texture), so read it against the baseline's."""
    return 100.0 * (1.0 - float(np.mean(maps.lift[regions.interior])) / float(np.mean(maps.lift[regions.rim])))


def mottling(maps: ArtifactMaps, regions: ArtifactRegions) -> float:
    """RMS band-pass (difference of Gaussians of ``mottle_sigmas``: blotches a few to tens of px across, per
    colour channel) in regions flat in every frame; % of full scale. Pixel noise is mostly filtered out (what
    is left counts, so averaging frames lowers it); patches of different brightness or colour raise it."""
    return 100.0 * float(np.sqrt(np.mean(maps.mottle[regions.flat]) / 3.0))


def detail(maps: ArtifactMaps, regions: ArtifactRegions) -> float:
    """RMS gradient magnitude of the lightly smoothed luma where the baseline is not flat; % of full scale per
    px. Blur lowers it, so a blurry result cannot win the artifact measures unnoticed."""
    return 100.0 * float(np.sqrt(np.mean(maps.gradient2[regions.textured])))


ARTIFACT_MEASURES = {"halo": halo, "hollow": hollowness, "mottle": mottling, "detail": detail}


def artifact_scores(maps: ArtifactMaps, regions: ArtifactRegions) -> dict[str, float]:
    """Every measure of ``ARTIFACT_MEASURES`` for one image; NaN where its region is empty."""
    scores = {}
    for name, measure in ARTIFACT_MEASURES.items():
        with np.errstate(invalid="ignore", divide="ignore"):
            scores[name] = measure(maps, regions) if _has_region(name, regions) else float("nan")
    return scores


def _has_region(name: str, regions: ArtifactRegions) -> bool:
    needed = {"halo": ("halo_band",), "hollow": ("rim", "interior"), "mottle": ("flat",), "detail": ("textured",)}
    return all(getattr(regions, field).any() for field in needed[name])


@dataclass(frozen=True, eq=False)
class FrameBaseline:
    """What single frames achieve, to measure a result against (see ``frame_baseline``)."""

    per_tile: ArtifactMaps  # maps of the sharpest frame of each tile: "the frame in focus there"
    sharpest: ArtifactMaps  # maps of the frame sharpest over the whole image
    sharpest_index: int
    owner: np.ndarray  # (rows, cols) int: index of the frame taken for each tile
    roughest: np.ndarray  # (H, W) float32: largest roughness of any frame at each pixel


def frame_baseline(
    aligned_frames: Callable[[], Iterable[np.ndarray]], scales: ArtifactScales = ArtifactScales()
) -> FrameBaseline:
    """Artifact maps of the best single frames of a stack, without ground truth.

    ``aligned_frames()`` yields the frames, all in the result's geometry; it is called twice (first to find
    the sharpest frame of every ``scales.tile`` tile by mean squared gradient, then to cut the maps), so only
    one frame is held at a time. The per-tile baseline is the no-reference stand-in for the camera oracle:
    the sharpest frame overall of a deep stack is defocused over much of the image, and its own glow and blur
    there would excuse the same faults in a result.
    """
    energies = []
    for frame in aligned_frames():
        energies.append(tile_energy(_gradient2(unit_luma(frame)), scales.tile))
    owner = np.argmax(np.stack(energies), axis=0)
    sharpest_index = int(np.argmax([float(np.mean(e)) for e in energies]))
    per_tile, sharpest, roughest = None, None, None
    for index, frame in enumerate(aligned_frames()):
        maps = artifact_maps(frame, scales)
        roughest = maps.roughness.copy() if roughest is None else np.maximum(roughest, maps.roughness)
        if (owner == index).any():
            per_tile = paste_tiles(per_tile, maps, owner == index, scales.tile)
        if index == sharpest_index:
            sharpest = maps
    return FrameBaseline(per_tile, sharpest, sharpest_index, owner, roughest)
