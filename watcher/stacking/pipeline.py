"""The stacking pipeline: measure (load small -> align -> match -> score -> decide) -> merge (load -> warp -> fold)
-> finish -> save.

Two passes over the frames. The first decodes each frame small (JPEG decodes straight to 1/2 .. 1/8 of its size),
places it, matches its exposure and colour to the reference, scores its sharpness and folds the scores into running
statistics, from which the depth map is decided: which frame is in focus where (:mod:`watcher.stacking.depth`).
Only then is each frame decoded whole, and folded into the result with the weights the depth map gives it -- so a
frame's light goes only where that frame is the sharp one, and no frame's blur lands anywhere else.

Memory: a few maps at the decision's resolution, the accumulator, and one decoded frame (plus the next, decoded
ahead), whatever the number of frames. This module knows pixels, not folders or processes: the daemon's worker
calls :func:`stack_to_file`.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np

from watcher import __version__
from watcher.atomic import write_atomic
from watcher.config import StackingSettings
from watcher.focus_range import frame_metrics, stack_advice
from watcher.stacking.blend import Fusion
from watcher.stacking.calibration import Calibration
from watcher.stacking.camera import fill_camera_exif
from watcher.stacking.depth import refine
from watcher.stacking.develop import RawColour
from watcher.stacking.formats import SUFFIXES
from watcher.stacking.frames import Frame, prefetching, read_frame
from watcher.stacking.mask import mask_from_evidence
from watcher.stacking.measure import Measured, Timer, check_matches, measure
from watcher.stacking.metadata import srgb_profile
from watcher.stacking.output import encode_image, encoded, thumbnail, to_8_bit, upright_exif
from watcher.stacking.probe import is_raw_name
from watcher.stacking.raw import RawError, raw_colour
from watcher.stacking.sources import FrameError, FrameSource, max_file_bytes
from watcher.stacking.weights import WeightPlan

Progress = Callable[[str, int, int], None]  # (stage, done, total)
_M_MMAP_THRESHOLD = -3  # mallopt parameter number in glibc's malloc.h


class StackError(ValueError):
    """The stack as a whole cannot be fused (no frames, frames that do not match each other)."""


@dataclass
class StackResult:
    """A fused stack.

    Attributes
    ----------
    image : ndarray, shape (H, W, 3), uint8 or uint16
        The result in the reference frame's geometry.
    depthmap : ndarray, shape (H, W), uint8, or None
        Where each pixel is in focus: frame index scaled to 0..255 (first frame 0, last 255), fractional between
        frames.
    record : dict
        Everything about the run: frames, transforms, gains, shares, per-stage timings (s), warnings, settings.
    exif : bytes or None
        The reference frame's EXIF, orientation reset (the pixels are upright) -- except for raw frames, whose
        pixels stay in sensor orientation and whose EXIF says how to turn them -- with the camera data it lacked
        (:mod:`watcher.stacking.camera`).
    icc : bytes or None
        An ICC profile of the colour space the pixels are in: sRGB for raw frames, else the reference frame's.
    mask : ndarray, shape (H, W), uint8, or None
        The object mask, when asked for: 255 object, 0 backdrop (:mod:`watcher.stacking.mask`).
    """

    image: np.ndarray
    depthmap: np.ndarray | None
    record: dict
    exif: bytes | None = None
    icc: bytes | None = None
    mask: np.ndarray | None = None


@functools.cache
def return_freed_memory_promptly() -> None:
    """Serve every allocation of 4 MiB or more from its own mapping, returned to the system when freed.

    glibc otherwise raises its mmap threshold to the size of the last large block freed (up to 32 MiB), after
    which the pipeline's 4-16 MiB per-frame temporaries live on the heap, where fragmentation keeps ~100 MB
    resident at 16 MP. Smaller, reused strip buffers stay on the heap. No-op where libc has no ``mallopt``.
    """
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).mallopt(_M_MMAP_THRESHOLD, 4 << 20)


# Frames up to this size are decoded one ahead while the previous one is merged; a 64 MP frame is 190 MB more,
# which a 2-4 GB Pi needs more than the second or two it saves: bigger frames are decoded in turn.
_PREFETCH_MAX_PIXELS = 24_000_000


def reference_index(count: int, reference: str) -> int:
    """Index of the reference frame: ``first`` or the ``middle`` one (lower middle for even counts)."""
    return 0 if reference == "first" else (count - 1) // 2


def stack(
    sources: Sequence[FrameSource | Path | str],
    settings: StackingSettings,
    *,
    progress: Progress | None = None,
    calibration: Calibration | None = None,
    deep: bool = False,
    object_mask: bool = False,
) -> StackResult:
    """Fuse a focus stack.

    Parameters
    ----------
    sources : sequence of FrameSource or paths
        The frames, in focus order (nearest to farthest or the reverse): images, or raw files (by their
        suffixes), which are developed alike with the reference frame's colour and fused in linear light.
    settings : StackingSettings
    progress : callable(stage, done, total), optional
    calibration : Calibration, optional
        Transforms of an earlier stack of the same scan, reused where they check out
        (:mod:`watcher.stacking.calibration`).
    deep : bool
        Make the image 16-bit whatever ``settings.output_format`` says (a 16-bit file is written beside it).
    object_mask : bool
        Also make the object mask (``StackResult.mask``, the record's ``mask``); the result is the same either way.

    Raises
    ------
    FrameError
        A frame is unreadable, truncated, over the pixel limit, or does not match the reference's size or depth.
    StackError
        No frames, or raw and other frames mixed.
    """
    return next(stack_each_blend(sources, settings, (settings.blend,), progress=progress, calibration=calibration,
                                 deep=deep, object_mask=object_mask))


def stack_each_blend(
    sources: Sequence[FrameSource | Path | str],
    settings: StackingSettings,
    blends: Sequence[str],
    *,
    progress: Progress | None = None,
    calibration: Calibration | None = None,
    deep: bool = False,
    object_mask: bool = False,
) -> Iterator[StackResult]:
    """Fuse a focus stack once with each blend of ``blends``, measuring it once.

    The measuring pass (placement, matching, focus, the depth map) does not depend on the blend, so comparing
    blends on one stack costs one measurement and a merge per blend. Each result is, byte for byte, what
    :func:`stack` gives with ``settings`` and that blend (``settings.blend`` itself is not used); its timings
    count the shared measurement. Parameters and errors as :func:`stack`; the errors of measuring are raised at
    the first result.
    """
    sources = [FrameSource.of(item) for item in sources]
    if not sources:
        raise StackError("no frames to stack")
    raw = _all_raw(sources)
    return_freed_memory_promptly()
    started = time.perf_counter()
    timer = Timer()
    ref = reference_index(len(sources), settings.reference)
    colour = None
    if raw:
        begin = time.perf_counter()
        colour = reference_colour(sources[ref], int(settings.max_megapixels * 1e6))
        sources = [replace(source, colour=colour) for source in sources]
        timer.add("develop_settings", begin)
    measured = measure(sources, settings, ref, timer, progress, calibration, object_mask=object_mask)
    measuring = time.perf_counter() - started
    for blend in blends:
        each = settings if blend == settings.blend else settings.model_copy(update={"blend": blend})
        yield _fuse(sources, measured, each, Timer(dict(timer.seconds)), measuring, colour, deep=deep,
                    progress=progress)


def _fuse(sources: Sequence[FrameSource], measured: Measured, settings: StackingSettings, timer: Timer,
          measuring: float, colour: RawColour | None, *, deep: bool, progress: Progress | None) -> StackResult:
    """The rest of :func:`stack` once ``measured``: decide the weights of ``settings.blend``, merge, finish, and
    account for it all (``measuring``: seconds the measurement took, counted in the total)."""
    started = time.perf_counter()
    raw = colour is not None
    count = len(sources)
    ref = reference_index(count, settings.reference)
    begin = started
    depth = refine(measured.depth, measured.guide, edge_aware=settings.blend != "weighted").depth
    plan = WeightPlan(measured, depth, settings.blend)
    timer.add("decide", begin)
    out_dtype = np.uint16 if deep else _output_dtype(measured.dtype, settings)
    image = merge(sources, measured, plan, settings, out_dtype, timer, progress, linear=raw)
    begin = time.perf_counter()
    depthmap = _depth_image(depth, measured.shape, count) if settings.depthmap else None
    begin = timer.add("finish", begin)
    mask = mask_account = None
    if measured.mask_evidence is not None:
        mask, mask_account = mask_from_evidence(measured.mask_evidence, image, linear=raw)
        timer.add("mask", begin)
    timer.seconds["total"] = measuring + time.perf_counter() - started
    shares = plan.shares(measured.depth.confidence)
    frames = [{**record, "share": round(share, 4)} for record, share in zip(measured.frames, shares)]
    warnings = [f"{f['name']}: {w}" for f in frames for w in f["warnings"]]
    warnings += mask_account["warnings"] if mask_account else []
    record = {
        "software": f"focus-watcher {__version__}",
        "frames": frames,
        "reference": {"index": ref, "name": sources[ref].name},
        "width": measured.shape[1],
        "height": measured.shape[0],
        "input_bit_depth": 16 if measured.dtype == np.uint16 else 8,
        "output_bit_depth": 16 if out_dtype == np.uint16 else 8,
        "decision": {
            "width": measured.decision_shape[1],
            "height": measured.decision_shape[0],
            "confident_share": round(float(measured.depth.confidence.mean()), 4),
        },
        "timings": {stage: round(seconds, 4) for stage, seconds in timer.seconds.items()},
        "warnings": warnings,
        "settings": settings.model_dump(mode="json"),
    }
    if colour is not None:
        record["raw"] = {**colour.record(), "colour_space": "sRGB", "highlights": "clipped at the sensor's white"}
    if mask_account is not None:
        record["mask"] = mask_account
    metrics = frame_metrics(frames)
    if metrics is not None:
        record["focus_range"] = [advice.as_dict() for advice in stack_advice(metrics)]
    exif = measured.exif if raw or not measured.exif else upright_exif(measured.exif)
    exif, record["camera_exif"] = fill_camera_exif(exif, (measured.shape[1], measured.shape[0]), settings.camera)
    return StackResult(image=image, depthmap=depthmap, record=record, exif=exif,
                       icc=srgb_profile() if raw else measured.icc, mask=mask)


def _all_raw(sources: Sequence[FrameSource]) -> bool:
    """Whether the frames are raw files (by their names); a stack must not mix raw and other frames."""
    raw = [source.name for source in sources if is_raw_name(source.name)]
    if raw and len(raw) < len(sources):
        other = next(source.name for source in sources if not is_raw_name(source.name))
        raise StackError(f"raw and other frames in one stack ({raw[0]}, {other}): raw frames are developed "
                         "and fused in linear light, the others are already encoded -- stack them apart")
    return bool(raw)


def reference_colour(source: FrameSource, max_pixels: int) -> RawColour:
    """How the stack's raw frames are developed: as LibRaw reads its reference frame ``source``."""
    try:
        return raw_colour(source.read_bytes(max_file_bytes(max_pixels)), max_pixels=max_pixels)
    except RawError as exc:
        raise FrameError(source.name, str(exc)) from None


def merge(
    sources: Sequence[FrameSource],
    measured: Measured,
    plan: WeightPlan,
    settings: StackingSettings,
    out_dtype: type[np.integer],
    timer: Timer,
    progress: Progress | None = None,
    *,
    linear: bool = False,
) -> np.ndarray:
    """Decode every frame whole and fold it in with its weights; the result in ``out_dtype``. ``linear``: the
    frames decode to linear light (raw frames), and are fused so."""
    count = len(sources)
    max_pixels = int(settings.max_megapixels * 1e6)
    gain_scale = max(max(g) for g in measured.gains)
    fusion = Fusion(settings.blend, measured.shape, measured.dtype, gain_scale, linear=linear)
    needed = plan.used
    reference = sources[reference_index(count, settings.reference)].name

    def load(source: FrameSource) -> Frame:
        begin = time.perf_counter()
        frame = read_frame(source, max_pixels=max_pixels)
        timer.add("decode", begin)
        return frame

    tick = time.perf_counter()
    ahead = measured.shape[0] * measured.shape[1] <= _PREFETCH_MAX_PIXELS
    for position, frame in prefetching([sources[k] for k in needed], load, ahead=ahead):
        index = needed[position]
        tick = timer.add("wait_for_decode", tick)
        check_matches(frame.name, frame.pixels.shape[:2], frame.pixels.dtype, measured.shape, measured.dtype, reference)
        fusion.add(frame.pixels, plan.frame(index))
        del frame
        tick = timer.add("merge", tick)
        if progress:
            progress("merge", position + 1, len(needed))
    image = fusion.result(out_dtype, settings.sharpen)
    del fusion
    timer.add("finish", tick)
    return image


def stack_to_file(
    sources: Sequence[FrameSource | Path | str],
    output: Path,
    settings: StackingSettings,
    *,
    deep_output: Path | None = None,
    depthmap_output: Path | None = None,
    thumbnail_output: Path | None = None,
    depth_thumbnail_output: Path | None = None,
    mask_output: Path | None = None,
    progress: Progress | None = None,
    calibration: Calibration | None = None,
) -> dict:
    """:func:`stack`, then write the result (and optionally a 16-bit copy in the format of ``deep_output``'s
    suffix, the depth map, the object mask -- an 8-bit grey PNG, whatever ``mask_output``'s suffix -- and the
    report's thumbnails of the result and the depth map, made from the arrays in memory) atomically. Returns the
    record, whose ``outputs`` name what was written."""
    result = stack(sources, settings, progress=progress, calibration=calibration, deep=deep_output is not None,
                   object_mask=mask_output is not None)
    begin = time.perf_counter()
    outputs = {"image": str(output)}
    if thumbnail_output is not None:
        write_atomic(thumbnail_output, encode_image(thumbnail(result.image), "jpg", jpeg_quality=85)[0])
        outputs["thumbnail"] = str(thumbnail_output)
    if deep_output is not None:  # the 16-bit image, then the (JPEG) result from it
        write_atomic(deep_output, encoded(result.image, SUFFIXES[deep_output.suffix.lower()], exif=result.exif,
                                          icc=result.icc)[0])
        outputs["deep_image"] = str(deep_output)
        if settings.output_format == "jpg":
            result.image = to_8_bit(result.image)
    pieces, warnings = encoded(result.image, settings.output_format, jpeg_quality=settings.jpeg_quality,
                               exif=result.exif, icc=result.icc)
    write_atomic(output, pieces)
    del result.image, pieces
    if depthmap_output is not None and result.depthmap is not None:
        depth_format = "jpg" if depthmap_output.suffix.lower() in (".jpg", ".jpeg") else "png"
        write_atomic(depthmap_output, encode_image(result.depthmap, depth_format, jpeg_quality=95)[0])
        outputs["depthmap"] = str(depthmap_output)
    if mask_output is not None:
        write_atomic(mask_output, encode_image(result.mask, "png")[0])
        outputs["mask"] = str(mask_output)
    if depth_thumbnail_output is not None and result.depthmap is not None:
        write_atomic(depth_thumbnail_output, encode_image(thumbnail(result.depthmap), "png")[0])
        outputs["depth_thumbnail"] = str(depth_thumbnail_output)
    record = result.record
    record["timings"]["save"] = round(time.perf_counter() - begin, 4)
    record["warnings"].extend(warnings)
    record["outputs"] = outputs
    return record


def _depth_image(depth: np.ndarray, shape: tuple[int, int], count: int) -> np.ndarray:
    scaled = depth * np.float32(255.0 / max(1, count - 1))
    small = np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
    return cv2.resize(small, shape[::-1], interpolation=cv2.INTER_LINEAR)


def _output_dtype(input_dtype: np.dtype, settings: StackingSettings) -> type[np.integer]:
    if settings.output_format == "jpg" or settings.output_depth == "8":
        return np.uint8
    if settings.output_depth == "16":
        return np.uint16
    return np.uint16 if input_dtype == np.uint16 else np.uint8
