"""Object mask: which pixels of the result are the object (255) and which the backdrop (0), from the focus evidence.

On a turntable rig the focus planes of a stack cover the object: the object is sharp in some frame, the backdrop
(paper, cloth, the holder beyond the object) in none. The measuring pass has already scored every frame's focus at
every pixel, so the mask costs no pass over the frames; it is made at the decision's resolution (~1 MP, whatever
the frames' size) in two stages:

1. :func:`focus_evidence`, right after :func:`~watcher.stacking.depth.decide`, from the votes: object where some
   frame shows clear detail (the best score above an absolute level) *and* the focus changes across the stack
   (best minus worst score: a backdrop far out of focus is equally blurred in every frame, a faint cloth just
   beyond the range changes little). Seeds need high thresholds and the engine's confidence (which already
   rejects a defocused edge's spread light); the region grows from them over pixels meeting lower ones
   (hysteresis). Two rules refine it: a textured backdrop just beyond the range peaks in the far end frame all
   along the image border, so evidence peaking there must change more than the border's own; and a faint surface
   inside the focus range peaks in the same interior frame over a neighbourhood (noise peaks in random frames),
   so coherent weak evidence also grows the region. Only two bool maps are kept through the merge.
2. :func:`mask_from_evidence`, after the merge, with the result's colour (:mod:`watcher.stacking.backdrop`):
   the evidence overshoots the silhouette by the focus window's reach, so its outer band is re-decided by colour
   against the predicted backdrop. Closed gaps in the object are either the backdrop seen through it (a ring's
   opening: its colour is the backdrop's; left open) or featureless object (a white label: filled, and counted
   as *inferred*: object without focus evidence of its own). A guided filter along the result's edges smooths the
   outline, which is then brought to full size as one uint8 plane.

Scores are the engine's units (natural log of focus energy, :mod:`watcher.stacking.focus`; detail of one grey
level in 8 bit scores about -9); "px" are pixels of the depth map. The thresholds are percentiles measured on the
synthetic turntable scenes (``benchmarks/turntable.py``: an object, a featureless label, a thin antenna, a ring,
on plain, cloth, brick and white backdrops, a lens cap) and checked on the real stacks (docs/benchmarks.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from watcher.stacking.backdrop import BackdropColour, colour_distance, predict_backdrop
from watcher.stacking.depth import DepthVotes
from watcher.stacking.focus import guided_filter
from watcher.stacking.output import srgb_encoded

# Seeds and growth (best score; best minus worst score). On the turntable scenes the object's best score has its
# 5th percentile at -7.6 and its 1st at -8.3, every featureless backdrop its 99th at or below -8.1; the object's
# change has its 5th percentile at 1.1, a faint cloth 1.2 focus steps beyond the range its 95th at 0.9, a brick
# wall 4.5 steps beyond its 95th at 1.4.
SEED_LEVEL = -7.6
GROW_LEVEL = -8.3
SEED_CHANGE = 1.5
GROW_CHANGE = 0.9
SEED_CONFIDENCE = 0.5  # of DepthMap.confidence: a seed is never a defocused edge's spread light
SMOOTHING_SIGMA = 1.0  # px: the score maps' per-pixel noise is calmed before the thresholds
MIN_COMPONENT = 1e-4  # of the map (~100 px at 1 MP): smaller components of evidence are noise
MIN_EVIDENCE = 5e-4  # of the map (~22 x 22 px at 1 MP): less evidence in all means nothing is in focus
# Components smaller than this share of the largest are dust and fibres on a backdrop inside the focus range.
MIN_RELATIVE_SIZE = 0.01
# Far-end rule: the image border (BORDER_STRIP of each side) shows a backdrop beyond the range when at least
# END_MIN_SHARE of it is growth-level evidence peaking in one end frame (twice as often as in the other) with a
# median change below SEED_CHANGE (an object in focus at the border changes more); evidence peaking in that frame
# then needs a change above the border's END_QUANTILE + END_MARGIN (brick wall: 1.87).
BORDER_STRIP = 0.06
END_MIN_SHARE = 0.03
END_QUANTILE = 99.0
END_MARGIN = 0.3
# Coherent evidence: the best frame is an interior frame and the same over a COHERENT_WINDOW box (standard
# deviation of its index at most COHERENT_SD frames; noise and a far-out-of-focus backdrop measure 1.3-2.0).
# Then COHERENT_CHANGE suffices to grow; FAINT_CHANGE marks a faintly-in-focus surface, and when more than
# FAINT_WARNING of the backdrop is one, the record warns (a featureless part of the object cut off, or the
# support the object stands on).
COHERENT_WINDOW = 9
COHERENT_SD = 0.5
COHERENT_CHANGE = 0.8
FAINT_CHANGE = 0.6
FAINT_WARNING = 0.2
BACKDROP_MARGIN = 4  # px: the sure backdrop keeps this far from the evidence, past its defocused rim
# The evidence's outer band re-decided by colour: the default focus window (5 px) at the coarsest of its 3 octaves
# reaches 10 px beyond an edge, the smoothing 1-2 more.
BAND = 12
SMALL_OPENING = 2e-4  # of the map: a backdrop-coloured gap smaller than this is a light patch on the object, filled
OPENING_GROWTH = 2  # px: an opening takes its rim, a little darker than the backdrop (the object's shade)
REFINE_RADIUS = 2  # px: the guided filter that lays the outline along the result's edges
REFINE_EPS = 1e-3  # (grey in [0, 1])^2: edges with a variance well above this are followed
_NO_DETAIL = -30.0  # best score given to pixels no frame covers: far below any real score
EMPTY_WARNING = ("mask: empty, nothing in the stack comes into focus and goes out of it again (a lens cap, a blank "
                 "wall, a single frame)")


@dataclass(frozen=True)
class FocusEvidence:
    """What :func:`focus_evidence` keeps for :func:`mask_from_evidence` (2 bytes per pixel of the depth map).

    Attributes
    ----------
    region : ndarray, shape (h, w), bool
        Object with focus evidence of its own.
    faint : ndarray, shape (h, w), bool
        Pixels peaking weakly but coherently in one interior frame (a faintly textured surface in focus).
    account : dict
        For the record: ``dropped_specks``, and ``far_end_frame`` and ``far_end_change`` when that rule applied.
    """

    region: np.ndarray
    faint: np.ndarray
    account: dict


def focus_evidence(votes: DepthVotes, confidence: np.ndarray, frames: int) -> FocusEvidence:
    """The object's focus evidence, from the measuring pass's votes (stage 1 of the module docstring).

    Parameters
    ----------
    votes : DepthVotes
        The folded scores of all frames (``best``, ``worst``, ``index``, ``count``).
    confidence : ndarray, shape (h, w), float32 in [0, 1]
        ``DepthMap.confidence`` of the decision.
    frames : int
        Frames in the stack.
    """
    covered = votes.count > 0
    change = _smoothed(np.where(covered, votes.best - votes.worst, 0.0))
    level = _smoothed(np.where(covered, votes.best, _NO_DETAIL))
    seeds = (level >= SEED_LEVEL) & (change >= SEED_CHANGE) & (confidence >= SEED_CONFIDENCE)
    growth = (level >= GROW_LEVEL) & (change >= GROW_CHANGE)
    seeds, growth, account = far_end_rule(seeds, growth, change, votes.index, frames)
    coherent = coherent_peaks(votes.index, frames) & covered
    growth |= coherent & (change >= COHERENT_CHANGE)
    area = change.size
    region = hysteresis(seeds, growth, max(1, int(MIN_COMPONENT * area)))
    region = cv2.morphologyEx(region.view(np.uint8), cv2.MORPH_CLOSE, np.ones((3, 3), np.uint8)).view(bool)
    region, account["dropped_specks"] = drop_specks(region)
    if np.count_nonzero(region) < MIN_EVIDENCE * area:
        region[:] = False
    return FocusEvidence(region, coherent & (change >= FAINT_CHANGE), account)


def far_end_rule(seeds: np.ndarray, growth: np.ndarray, change: np.ndarray, index: np.ndarray,
                 frames: int) -> tuple[np.ndarray, np.ndarray, dict]:
    """Raise the change needed where evidence peaks in an end frame that the image border shows as backdrop.

    A textured backdrop just beyond the focus range is nearly sharp in the far end frame: per pixel it looks like
    object. The border, where the backdrop is, tells its level (see the constants). Returns ``seeds`` and
    ``growth`` (bool, (h, w)), new arrays when the rule applied, and for the record the frame and the change
    needed there.
    """
    if frames < 3:
        return seeds, growth, {}
    height, width = change.shape
    strip = np.ones((height, width), bool)
    rows, cols = max(1, int(BORDER_STRIP * height)), max(1, int(BORDER_STRIP * width))
    strip[rows:-rows, cols:-cols] = False
    at_border = growth & strip
    ends = (0, frames - 1)
    counts = [np.count_nonzero(at_border & (index == end)) for end in ends]
    end = ends[int(np.argmax(counts))]
    sample = change[at_border & (index == end)]
    if (sample.size < END_MIN_SHARE * np.count_nonzero(strip) or max(counts) < 2 * min(counts)
            or float(np.median(sample)) >= SEED_CHANGE):
        return seeds, growth, {}
    needed = max(GROW_CHANGE, float(np.percentile(sample, END_QUANTILE)) + END_MARGIN)
    elsewhere = index != end
    seeds = seeds & (elsewhere | (change >= max(needed, SEED_CHANGE)))
    growth = growth & (elsewhere | (change >= needed))
    return seeds, growth, {"far_end_frame": int(end), "far_end_change": round(needed, 3)}


def coherent_peaks(index: np.ndarray, frames: int) -> np.ndarray:
    """Pixels whose best frame is an interior one and the same all around (bool, (h, w); see the constants)."""
    box = (COHERENT_WINDOW, COHERENT_WINDOW)
    frame = index.astype(np.float32)
    mean = cv2.blur(frame, box)
    variance = cv2.blur(frame * frame, box) - mean * mean
    return (index > 0) & (index < frames - 1) & (variance <= COHERENT_SD**2)


def hysteresis(seeds: np.ndarray, growth: np.ndarray, min_area: int) -> np.ndarray:
    """The 8-connected components of ``seeds | growth`` that hold a seed and at least ``min_area`` px (bool)."""
    count, labels = cv2.connectedComponents((seeds | growth).view(np.uint8), connectivity=8)
    kept = np.zeros(count, bool)
    kept[labels[seeds]] = True
    kept &= np.bincount(labels.ravel(), minlength=count) >= min_area
    kept[0] = False
    return kept[labels]


def drop_specks(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """``mask`` (bool) without its 8-connected components under MIN_RELATIVE_SIZE of the largest; and how many."""
    count, labels = cv2.connectedComponents(mask.view(np.uint8), connectivity=8)
    if count <= 2:
        return mask, 0
    sizes = np.bincount(labels.ravel(), minlength=count)
    sizes[0] = 0
    kept = sizes >= MIN_RELATIVE_SIZE * sizes.max()
    kept[0] = False
    return kept[labels], int(count - 1 - np.count_nonzero(kept))


def border_connected(mask: np.ndarray) -> np.ndarray:
    """The parts of ``mask`` (bool) 4-connected to the image's border."""
    count, labels = cv2.connectedComponents(mask.view(np.uint8), connectivity=4)
    touching = np.zeros(count, bool)
    touching[np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])] = True
    touching[0] = False
    return touching[labels]


def mask_from_evidence(evidence: FocusEvidence, image: np.ndarray, *,
                       linear: bool = False) -> tuple[np.ndarray, dict]:
    """The full-size mask from the focus evidence and the result (stage 2 of the module docstring).

    Parameters
    ----------
    evidence : FocusEvidence
    image : ndarray, shape (H, W, 3), uint8 or uint16
        The fused result; read once, at the evidence's resolution.
    linear : bool
        ``image`` is linear light (a stack of raw frames): its colours are judged sRGB-encoded, as other results'.

    Returns
    -------
    mask : ndarray, shape (H, W), uint8
        255 object, 0 backdrop.
    account : dict
        The record's ``mask`` section: ``share`` (of the image that is object), ``inferred_share`` (of the mask:
        object without focus evidence of its own), ``colour_decided_share`` (of the mask: edge band kept for its
        colour), ``backdrop_colour`` (``ok``, ``unpredictable`` or ``unseen``) and its tolerances, ``openings``
        and ``open_share`` (gaps left open as backdrop, share of the image), ``faint_backdrop_share``,
        ``dropped_specks``, the far-end rule's frame and change, ``empty`` and ``warnings``.
    """
    height, width = evidence.region.shape
    colour = cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)
    if linear:
        colour = srgb_encoded(colour)
    if colour.dtype != np.uint8:
        colour = (colour >> 8).astype(np.uint8)
    soft, account = soft_mask(evidence, colour)
    full = cv2.resize(soft, (image.shape[1], image.shape[0]), interpolation=cv2.INTER_LINEAR)
    cv2.threshold(full, 127, 255, cv2.THRESH_BINARY, dst=full)
    return full, {"share": round(cv2.countNonZero(full) / full.size, 5), **account}


def soft_mask(evidence: FocusEvidence, colour: np.ndarray) -> tuple[np.ndarray, dict]:
    """The mask at the evidence's resolution, uint8 0-255 (soft along the outline), and the record's account
    (all but ``share``, which :func:`mask_from_evidence` measures on the full-size mask).

    ``colour``: the result at the evidence's resolution, (h, w, 3) uint8 BGR.
    """
    notes = dict(evidence.account)
    mask, inferred, band = _decide(evidence.region, colour, notes)
    account = {**_shares(mask, inferred, band, evidence.faint), "empty": not mask.any(), **notes}
    account["warnings"] = _warnings(account)
    return refine_outline(mask, colour), account


def _decide(region: np.ndarray, colour: np.ndarray, notes: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The mask, its inferred part and the band decided by colour (bool, (h, w)); what was done goes into
    ``notes``."""
    if not region.any():
        return region, region, region
    lab = cv2.cvtColor(colour, cv2.COLOR_BGR2LAB)
    near = cv2.dilate(region.view(np.uint8), np.ones((2 * BACKDROP_MARGIN + 1,) * 2, np.uint8)).view(bool)
    backdrop = predict_backdrop(lab, border_connected(~region) & ~near)
    notes.update(_backdrop_account(backdrop))
    if backdrop is None or not backdrop.predictable:  # no colour to tell an opening from a label: all gaps filled
        gaps = ~region & ~border_connected(~region)
        return region | gaps, gaps, np.zeros_like(region)
    obj, band = trim_band(region, lab, backdrop)
    obj, dropped = drop_specks(obj)
    notes["dropped_specks"] += dropped
    inferred, opening, notes["openings"] = fill_gaps(obj, backdrop)
    notes["open_share"] = round(float(opening.mean()), 5)
    return obj | inferred, inferred, band


def trim_band(region: np.ndarray, lab: np.ndarray, backdrop: BackdropColour) -> tuple[np.ndarray, np.ndarray]:
    """The evidence's outer BAND px re-decided by colour: object where it is not the backdrop's colour and joined
    to the core; returns the object and the band (bool, (h, w))."""
    core = cv2.erode(region.view(np.uint8), np.ones((2 * BAND + 1,) * 2, np.uint8)).view(bool)
    band = region & ~core
    kept = core | (band & (colour_distance(lab, backdrop.pixel) > backdrop.pixel_tolerance))
    if not core.any():  # all of it is thin: nothing to be joined to
        return kept, band
    count, labels = cv2.connectedComponents(kept.view(np.uint8), connectivity=8)
    joined = np.zeros(count, bool)
    joined[labels[core]] = True
    joined[0] = False
    return joined[labels], band


def fill_gaps(obj: np.ndarray, backdrop: BackdropColour) -> tuple[np.ndarray, np.ndarray, int]:
    """Closed gaps in ``obj``: the backdrop seen through it (its colour, at least SMALL_OPENING of the map) stays
    open, the rest is featureless object. Returns the filled (inferred) part and the openings (bool, (h, w)), and
    how many openings."""
    height, width = obj.shape
    gaps = ~obj & ~border_connected(~obj)
    if not gaps.any():
        return gaps, gaps, 0
    like = (backdrop.region_distance <= backdrop.region_tolerance).view(np.uint8)
    like = gaps & cv2.resize(like, (width, height), interpolation=cv2.INTER_NEAREST).view(bool)
    count, labels = cv2.connectedComponents(like.view(np.uint8), connectivity=4)
    large = np.bincount(labels.ravel(), minlength=count) >= SMALL_OPENING * obj.size
    large[0] = False
    grow = np.ones((2 * OPENING_GROWTH + 1,) * 2, np.uint8)
    opening = gaps & cv2.dilate(large[labels].view(np.uint8), grow).view(bool)
    return gaps & ~opening, opening, int(np.count_nonzero(large))


def refine_outline(mask: np.ndarray, colour: np.ndarray) -> np.ndarray:
    """``mask`` (bool) as uint8 0-255, its outline laid along the colour's edges by a guided filter.

    Filtered only in the box around the outline: elsewhere the mask is all 0 or all 255.
    """
    soft = mask.astype(np.float32)
    rows = np.flatnonzero(mask.any(axis=1) & ~mask.all(axis=1))
    cols = np.flatnonzero(mask.any(axis=0) & ~mask.all(axis=0))
    if rows.size and cols.size:
        pad = 2 * REFINE_RADIUS + 1
        top, bottom = max(0, rows[0] - pad), min(mask.shape[0], rows[-1] + pad + 1)
        left, right = max(0, cols[0] - pad), min(mask.shape[1], cols[-1] + pad + 1)
        grey = cv2.cvtColor(colour[top:bottom, left:right], cv2.COLOR_BGR2GRAY).astype(np.float32)
        grey *= np.float32(1 / 255)
        soft[top:bottom, left:right] = guided_filter(grey, soft[top:bottom, left:right], REFINE_RADIUS, REFINE_EPS)
    return np.clip(soft * 255 + 0.5, 0, 255).astype(np.uint8)


def _smoothed(values: np.ndarray) -> np.ndarray:
    return cv2.GaussianBlur(values.astype(np.float32), (0, 0), SMOOTHING_SIGMA)


def _backdrop_account(backdrop: BackdropColour | None) -> dict:
    if backdrop is None:
        return {"backdrop_colour": "unseen"}
    return {"backdrop_colour": "ok" if backdrop.predictable else "unpredictable",
            "colour_tolerance": round(backdrop.pixel_tolerance, 2),
            "opening_tolerance": round(backdrop.region_tolerance, 2)}


def _shares(mask: np.ndarray, inferred: np.ndarray, band: np.ndarray, faint: np.ndarray) -> dict:
    def share(part: np.ndarray, whole: np.ndarray) -> float:
        return float(np.count_nonzero(part & whole)) / max(1, int(np.count_nonzero(whole)))

    return {
        "inferred_share": round(share(inferred, mask), 5),
        "colour_decided_share": round(share(band, mask), 5),
        "faint_backdrop_share": round(share(faint, ~mask), 4),
    }


def _warnings(account: dict) -> list[str]:
    if account["empty"]:
        return [EMPTY_WARNING]
    if account["faint_backdrop_share"] > FAINT_WARNING:
        return [f"mask: {100 * account['faint_backdrop_share']:.0f} % of the backdrop looks faintly in focus (a "
                "featureless part of the object, or the support it stands on): check the mask"]
    return []
