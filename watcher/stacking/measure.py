"""The measuring pass: every frame, decoded small, is placed, matched and scored; the depth map is decided.

Frames come in placement order -- the reference first, then outward on each side -- so that each is aligned to an
already placed neighbour. For each frame this pass keeps only its transform, its gains and a few numbers for the
record; the per-pixel evidence is folded into :class:`~watcher.stacking.depth.DepthVotes` as it arrives. Memory is
a few maps at the decision's resolution, whatever the number of frames.
"""

from __future__ import annotations

import math
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TypeVar

import cv2
import numpy as np

from watcher.config import StackingSettings
from watcher.stacking.align import (
    PairAlignment,
    alignment_image,
    check_step,
    coverage,
    estimate_pair,
    rescale_warp,
    warp_frame,
)
from watcher.stacking.calibration import CHECK_TOLERANCE_PX, Calibration
from watcher.stacking.depth import DepthMap, DepthVotes, decide
from watcher.stacking.focus import multiscale_score, relative_blur
from watcher.stacking.frames import Frame, preview_reduction, read_preview
from watcher.stacking.mask import FocusEvidence, focus_evidence
from watcher.stacking.photometric import channel_gains, luma_gain, match_copy
from watcher.stacking.sources import FrameError, FrameSource

UNCOVERED = np.float32(-1e30)  # score of pixels a frame does not cover
_BITS = {np.dtype(np.uint8): 8, np.dtype(np.uint16): 16}
_CHANGE_QUANTILE = 50  # focus_change is measured where either frame scores above its median (textured pixels)
_BLUR_SIDE = 320  # px: neighbours' relative blur is fitted on copies this long on their longer side
T = TypeVar("T")


@dataclass
class Timer:
    """Seconds per named stage, summed over frames (and over the threads that measure them at once)."""

    seconds: dict[str, float] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, stage: str, since: float) -> float:
        now = time.perf_counter()
        with self._lock:
            self.seconds[stage] = self.seconds.get(stage, 0.0) + now - since
        return now


@dataclass
class Measured:
    """What the merging pass needs, and the record's account of each frame.

    Attributes
    ----------
    shape : (H, W)
        The reference frame's full size; every frame has it.
    dtype : numpy dtype
        Sample type of every frame.
    decision_shape : (h, w)
        Resolution of the depth map and of the weights.
    warps : list of ndarray (3, 3)
        Per frame index, reference -> frame coordinates at full resolution.
    gains : list of (3,) tuples
        Per frame index, (B, G, R) gains matching it to the reference.
    depth : DepthMap
    guide : ndarray, shape (h, w), float32
        The reference frame's grey at the decision's resolution (edges to refine the depth map along).
    frames : list of dict
        Per frame index, the record: name, placement, model, correlation, transform, gains, focus_change, warnings.
    exif : bytes or None
        The reference frame's EXIF block.
    icc : bytes or None
        The reference frame's ICC colour profile.
    mask_evidence : FocusEvidence or None
        The object's focus evidence, when an object mask is asked for (:mod:`watcher.stacking.mask`).
    """

    shape: tuple[int, int]
    dtype: np.dtype
    decision_shape: tuple[int, int]
    warps: list[np.ndarray]
    gains: list[tuple[float, float, float]]
    depth: DepthMap
    guide: np.ndarray
    frames: list[dict]
    exif: bytes | None
    icc: bytes | None = None
    mask_evidence: FocusEvidence | None = None

    def coverage(self, index: int) -> np.ndarray | None:
        """Bool map (h, w) of decision pixels frame ``index`` covers; None when it covers all of them."""
        scale = self.decision_shape[1] / self.shape[1]
        return coverage(rescale_warp(self.warps[index], scale), self.decision_shape)


def decision_shape(shape: tuple[int, int], max_megapixels: float) -> tuple[int, int]:
    """Size (h, w) of the depth map for frames of ``shape``: about ``max_megapixels``, same aspect.

    The preview's own size when it is within a quarter over the budget (no resampling of every preview), else
    the budget exactly.
    """
    height, width = shape
    budget = max_megapixels * 1e6
    reduce = preview_reduction(width, height, int(budget))
    preview = (-(-height // reduce), -(-width // reduce))
    if preview[0] * preview[1] <= 1.25 * budget:
        return preview
    scale = min(1.0, math.sqrt(budget / (height * width)))
    return max(1, round(height * scale)), max(1, round(width * scale))


def measure(
    sources: Sequence[FrameSource],
    settings: StackingSettings,
    reference: int,
    timer: Timer,
    progress: Callable[[str, int, int], None] | None = None,
    calibration: Calibration | None = None,
    *,
    object_mask: bool = False,
) -> Measured:
    """Place, match and score every frame (decoded small) and decide the depth map; see the module docstring.

    Frames are measured in placement order, two at a time (:func:`in_placement_order`), and folded into the votes
    in a fixed order, so that the result never depends on which thread was faster.

    ``calibration``: transforms of an earlier stack of the same scan, checked and reused where they hold.
    ``object_mask``: also keep the object's focus evidence (``Measured.mask_evidence``).
    """
    count = len(sources)
    max_pixels = int(settings.max_megapixels * 1e6)
    preview_pixels = int(settings.focus_max_megapixels * 1e6)

    def load(index: int) -> Frame:
        begin = time.perf_counter()
        frame = read_preview(sources[index], max_pixels=max_pixels, preview_pixels=preview_pixels)
        timer.add("decode_preview", begin)
        return frame

    first: Frame | None = load(reference)
    state = _Measuring(first, settings, count, reference)
    if calibration is not None and calibration.fits(state.shape, count, reference):
        state.calibration = calibration
    records: list[dict] = [{} for _ in range(count)]

    def measure_one(index: int) -> _FrameMeasure:
        nonlocal first
        if index == reference:
            frame, first = first, None  # the reference's preview is not kept past its measurement
        else:
            frame = load(index)
            check_matches(frame.name, frame.full_shape, frame.pixels.dtype, state.shape, state.dtype,
                          sources[reference].name)
        return state.measure_frame(index, frame, timer)

    def fold(measured: _FrameMeasure, done: int) -> None:
        state.votes.add(measured.index, measured.score, [measured.neighbour] if measured.neighbour else [])
        records[measured.index] = measured.record
        if progress:
            progress("measure", done, count)

    in_placement_order(reference, count, measure_one, fold)
    for index, record in enumerate(records):
        record["focus_change"] = state.focus_changes.get(index)
    begin = time.perf_counter()
    steps = [state.blur_steps[index] for index in sorted(state.blur_steps)]
    depth = decide(state.votes, count, float(np.median(steps)) if steps else None)
    begin = timer.add("decide", begin)
    evidence = None
    if object_mask:
        evidence = focus_evidence(state.votes, depth.confidence, count)
        timer.add("mask", begin)
    return Measured(
        shape=state.shape, dtype=state.dtype, decision_shape=state.decision_shape, warps=state.warps,
        gains=state.gains, depth=depth, guide=state.guide, frames=records, exif=state.exif, icc=state.icc,
        mask_evidence=evidence,
    )


def in_placement_order(reference: int, count: int, work: Callable[[int], T], fold: Callable[[T, int], None]) -> None:
    """``work(index)`` for every frame, ``fold(result, how many so far)`` for each, in a fixed order.

    The reference is worked first; then the two sides of the stack (later frames, earlier frames), each a chain of
    neighbours worked outward in order, run in two threads at once (OpenCV and numpy release the GIL). Results
    are folded on the calling thread in placement order -- the reference, then one frame of each side in turn --
    whichever thread was faster. The earlier side's first frame is worked only after the later side's first (its
    step is predicted from that one). An exception in ``work`` or ``fold`` stops both sides and is raised here.
    """
    fold(work(reference), 1)
    done = 1
    sides = {+1: list(range(reference + 1, count)), -1: list(range(reference - 1, -1, -1))}
    results = {side: queue.Queue(maxsize=1) for side in sides}
    stop = threading.Event()
    later_first_done = threading.Event()

    def run_side(side: int) -> None:
        try:
            for position, index in enumerate(sides[side]):
                if side == -1 and position == 0:
                    later_first_done.wait()
                if stop.is_set():
                    return
                result = work(index)
                if side == 1:
                    later_first_done.set()
                results[side].put(result)
        except BaseException as exc:  # noqa: BLE001 - handed to the calling thread, which raises it
            results[side].put(exc)
        finally:
            if side == 1:
                later_first_done.set()

    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="measure") as pool:
        for side in sides:
            pool.submit(run_side, side)
        try:
            for position in range(max(len(frames) for frames in sides.values())):
                for side, frames in sides.items():
                    if position < len(frames):
                        result = results[side].get()
                        if isinstance(result, BaseException):
                            raise result
                        done += 1
                        fold(result, done)
        finally:
            stop.set()
            for side in sides:  # unblock a side waiting to hand over its next result
                while not results[side].empty():
                    results[side].get_nowait()


@dataclass
class _FrameMeasure:
    """One frame's measurements, handed from its side's thread to the votes."""

    index: int
    record: dict
    score: np.ndarray
    neighbour: tuple[int, np.ndarray] | None  # the frame before it on its side, and its score


def check_matches(name: str, shape: tuple[int, int], dtype: np.dtype, ref_shape: tuple[int, int],
                  ref_dtype: np.dtype, reference: str) -> None:
    """Raise :class:`FrameError` unless a frame has the reference's size and sample type."""
    if tuple(shape) != tuple(ref_shape):
        raise FrameError(name, f"size {shape[1]}x{shape[0]} differs from the reference {reference}'s "
                               f"{ref_shape[1]}x{ref_shape[0]}")
    if dtype != ref_dtype:
        raise FrameError(name, f"{_BITS[np.dtype(dtype)]}-bit frame in a stack of {_BITS[np.dtype(ref_dtype)]}-bit "
                               f"frames (reference {reference})")


class _Measuring:
    """Per-stack state of the measuring pass."""

    def __init__(self, first: Frame, settings: StackingSettings, count: int, reference: int) -> None:
        self.settings = settings
        self.reference = reference
        self.exif = first.exif
        self.icc = first.icc
        self.shape: tuple[int, int] = first.full_shape
        self.dtype = first.pixels.dtype
        self.decision_shape = decision_shape(self.shape, settings.focus_max_megapixels)
        self.warps: list[np.ndarray] = [np.eye(3) for _ in range(count)]
        self.gains: list[tuple[float, float, float]] = [(1.0, 1.0, 1.0) for _ in range(count)]
        self.votes = DepthVotes(self.decision_shape)
        self.guide = np.zeros(self.decision_shape, np.float32)
        self._reference_copy: np.ndarray | None = None
        # per side of the reference (+1 later frames, -1 earlier): (neighbour's grey, its warp, last step) at
        # alignment resolution; and the neighbour's score (for focus_change)
        self._sides: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray | None]] = {}
        self._scores: dict[int, np.ndarray] = {}
        self._greys: dict[int, np.ndarray] = {}
        self.focus_changes: dict[int, float | None] = {}  # frame i against frame i - 1
        self.blur_steps: dict[int, float] = {}  # per neighbouring pair (keyed by its farther frame), decision px
        self._first_steps: dict[int, np.ndarray] = {}
        self.calibration: Calibration | None = None

    def measure_frame(self, index: int, frame: Frame, timer: Timer) -> _FrameMeasure:
        """Place, match and score one frame (its preview); called for the reference first, then from one thread
        per side, each side in order outward."""
        reference, pixels = self.reference, frame.pixels
        begin = time.perf_counter()
        placed = self._place(index, reference, pixels)
        begin = timer.add("align", begin)
        small = self._decision_copy(pixels)
        scale = self.decision_shape[1] / self.shape[1]
        warp_small = rescale_warp(self.warps[index], scale)
        covered = coverage(warp_small, self.decision_shape)
        gains, gains_note = self._match(index, small, warp_small, covered)
        begin = timer.add("match", begin)
        grey = cv2.cvtColor(small, cv2.COLOR_BGR2GRAY)
        grey = warp_frame(grey, warp_small).astype(np.float32)
        grey *= np.float32(luma_gain(gains) / np.iinfo(self.dtype).max)
        begin = timer.add("warp", begin)
        if index == reference:
            self.guide = grey
        score = multiscale_score(grey, self.settings.focus_measure, self.settings.focus_window,
                                 self.settings.focus_scales)
        if covered is not None:
            score[~covered] = UNCOVERED
        blur_copy = _blur_copy(grey)
        neighbour = None
        if index == reference:
            self._scores = {+1: score, -1: score}
            self._greys = {+1: blur_copy, -1: blur_copy}
        else:
            side = 1 if index > reference else -1
            neighbour = (index - side, self._scores[side])
            # the change belongs to the later frame of the pair (frame i against frame i - 1)
            self.focus_changes[max(index, index - side)] = _focus_change(score, self._scores[side])
            step = relative_blur(self._greys[side], blur_copy)
            if step is not None:
                self.blur_steps[index] = step * self.decision_shape[1] / blur_copy.shape[1]
            self._scores[side], self._greys[side] = score, blur_copy
        timer.add("focus", begin)
        record = {"name": frame.name, **placed, "gains": [round(g, 4) for g in gains]}
        if gains_note:
            record["notes"] = [*record.get("notes", []), gains_note]
        return _FrameMeasure(index, record, score, neighbour)

    def _decision_copy(self, pixels: np.ndarray) -> np.ndarray:
        height, width = self.decision_shape
        if pixels.shape[:2] == (height, width):
            return pixels
        return cv2.resize(pixels, (width, height), interpolation=cv2.INTER_AREA)

    def _place(self, index: int, reference: int, pixels: np.ndarray) -> dict:
        settings = self.settings
        if not settings.align:
            return {"placement": "unaligned", "model": "identity", "correlation": None,
                    "transform": np.eye(3).tolist(), "warnings": []}
        grey, preview_scale = alignment_image(pixels, settings.align_max_side)
        scale = preview_scale * pixels.shape[1] / self.shape[1]  # alignment px per full-resolution px
        if index == reference:
            self._sides = {+1: (grey, np.eye(3), None), -1: (grey, np.eye(3), None)}
            return {"placement": "reference", "model": "identity", "correlation": None,
                    "transform": np.eye(3).tolist(), "warnings": []}
        side = 1 if index > reference else -1
        neighbour, neighbour_warp, last_step = self._sides[side]
        prediction = last_step
        if prediction is None and -side in self._first_steps:
            # the first step on this side mirrors the first step on the other (breathing is smooth through the
            # reference)
            prediction = np.linalg.inv(self._first_steps[-side])
        checked = None
        if self.calibration is not None:
            prediction = rescale_warp(self.calibration.step(index, index - side), scale)
            moved = check_step(neighbour, grey, prediction, keep_percent=settings.align_gradient_percent)
            checked = {"source": self.calibration.source, "check_px": round(moved / scale, 3),
                       "held": moved <= CHECK_TOLERANCE_PX}
        if checked is not None and checked["held"]:
            pair = PairAlignment(prediction, "calibrated", float("nan"), (), ())
        else:
            pair = estimate_pair(neighbour, grey, levels=settings.pyramid_levels,
                                 keep_percent=settings.align_gradient_percent, prediction=prediction)
        if last_step is None and pair.model not in ("predicted", "identity", "calibrated"):
            self._first_steps[side] = pair.warp
        step = pair.warp if pair.model != "identity" else last_step
        warp_small = pair.warp @ neighbour_warp
        self._sides[side] = (grey, warp_small, step)
        self.warps[index] = rescale_warp(warp_small, 1.0 / scale)
        record = {
            "placement": {"predicted": "predicted", "identity": "unaligned", "calibrated": "calibrated"}.get(
                pair.model, "estimated"),
            "model": pair.model,
            "correlation": None if math.isnan(pair.correlation) else round(pair.correlation, 5),
            "transform": np.round(self.warps[index], 8).tolist(),
            "warnings": list(pair.warnings),
        }
        if pair.tried:
            record["notes"] = list(pair.tried)
        if checked is not None:
            record["calibration"] = checked
        return record

    def _match(self, index: int, small: np.ndarray, warp_small: np.ndarray,
               covered: np.ndarray | None) -> tuple[tuple, str | None]:
        copy = match_copy(small, warp_small)
        if self._reference_copy is None:
            self._reference_copy = copy
            return (1.0, 1.0, 1.0), None
        mask = None
        if covered is not None:
            mask = cv2.resize(covered.astype(np.uint8), copy.shape[1::-1], interpolation=cv2.INTER_NEAREST) > 0
        gains = channel_gains(self._reference_copy, copy, mask)
        if gains is None:
            return (1.0, 1.0, 1.0), "exposure and colour not matched: too different from the reference"
        self.gains[index] = gains
        return gains, None


def _blur_copy(grey: np.ndarray) -> np.ndarray:
    height, width = grey.shape
    scale = min(1.0, _BLUR_SIDE / max(height, width))
    if scale == 1.0:
        return grey
    return cv2.resize(grey, (max(1, round(width * scale)), max(1, round(height * scale))), interpolation=cv2.INTER_AREA)


def _focus_change(score: np.ndarray, previous: np.ndarray | None) -> float | None:
    """Median |score - previous| (natural log of energy) where either is textured and both cover the pixel."""
    if previous is None:
        return None
    both = (score > UNCOVERED / 2) & (previous > UNCOVERED / 2)
    if not both.any():
        return None
    sample = both[::4, ::4]
    textured = both & ((score > np.percentile(score[::4, ::4][sample], _CHANGE_QUANTILE))
                       | (previous > np.percentile(previous[::4, ::4][sample], _CHANGE_QUANTILE)))
    return round(float(np.median(np.abs(score[textured] - previous[textured]))), 4)
