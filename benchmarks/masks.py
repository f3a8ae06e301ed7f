"""The object mask (watcher/stacking/mask.py): quality against ground truth, cost against the stack, real stacks.

    uv run python -m benchmarks.masks [--size 1500x1000] [--scenes plain,cloth,...] [--seed N]
        [--cost 1.5mp,16mp] [--repeat N] [--real] [--overlays DIR]

Quality: every turntable scene (benchmarks/turntable.py) is rendered, written as JPEG frames, stacked by the real
pipeline with the mask, and the mask is scored in the reference frame's geometry: IoU, boundary F-score (3 px
tolerance), recall of the thin antenna and of the featureless label, the share of the ring's opening left open,
and the record's inferred share. Scenes without an object report the mask's share and whether it warned.

Cost: the plain scene's frames at 1.5 MP, and enlarged to 16 MP (4656 x 3496; speed does not depend on the
content), cached in benchmarks/out/masks/. Each repeat stacks in this process without and with the mask,
interleaved: wall time is the record's (``timings.total``; the mask's ``timings.mask`` plus encoding its PNG),
CPU time is the process's, both best of the repeats. Peak RSS: one ``focus-watcher stack`` process each way.

``--real``: the mask's record on the vendored stacks (tests/data) and those in ../shared/data/real.
``--overlays DIR``: the mask over each result at full size (backdrop darkened and tinted magenta, the mask's outline
white, the truth's red), for looking at at 100 %.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import cv2
import numpy as np

from benchmarks.speed import OUT, REPO, SIZES
from benchmarks.speed import measure as measure_process
from benchmarks.synthetic import write_stack
from benchmarks.turntable import EMPTY_SCENES, OBJECT_SCENES, SIZE, Scene, make_scene
from watcher.config import StackingSettings
from watcher.stacking import mask as mask_module
from watcher.stacking import measure as measure_module
from watcher.stacking import pipeline as pipeline_module
from watcher.stacking.output import encode_image
from watcher.stacking.pipeline import StackResult, stack

BOUNDARY_TOLERANCE = 3  # px: the boundary F-score's (full resolution)
REAL_STACKS = (REPO.parent / "shared" / "data" / "real", REPO / "tests" / "data")
_FRAME_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff")


def iou(mask: np.ndarray, truth: np.ndarray) -> float:
    """Intersection over union of two bool maps (1.0 when both are empty)."""
    union = np.count_nonzero(mask | truth)
    return 1.0 if union == 0 else np.count_nonzero(mask & truth) / union


def boundary_f(mask: np.ndarray, truth: np.ndarray, tolerance: float = BOUNDARY_TOLERANCE) -> float:
    """Boundary F-score: the harmonic mean of the share of ``mask``'s outline within ``tolerance`` px of
    ``truth``'s and the reverse (bool maps of one shape; 1.0 when neither has an outline)."""
    outline, true_outline = _outline(mask), _outline(truth)
    if not outline.any() or not true_outline.any():
        return float(outline.any() == true_outline.any())
    precision = float((_distance_to(true_outline)[outline] <= tolerance).mean())
    recall = float((_distance_to(outline)[true_outline] <= tolerance).mean())
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def recall(mask: np.ndarray, part: np.ndarray) -> float:
    """Share of ``part`` (bool) inside ``mask`` (bool); NaN for an empty part."""
    return float(mask[part].mean()) if part.any() else float("nan")


def score_scene(scene: Scene, result: StackResult) -> dict:
    """The mask of ``result`` (the scene stacked with a mask) against the scene's truth."""
    mask = result.mask >= 128
    account = result.record["mask"]
    row = {"share": float(mask.mean()), "inferred": account["inferred_share"], "warned": bool(account["warnings"])}
    if not scene.truth.any():
        return row
    truth = scene.in_reference(scene.truth)
    parts = {name: scene.in_reference(part) for name, part in scene.parts.items()}
    return {**row, "iou": iou(mask, truth), "boundary_f": boundary_f(mask, truth),
            "antenna": recall(mask, parts["antenna"]), "label": recall(mask, parts["label"]),
            "hole_open": 1.0 - recall(mask, parts["hole"]), "edge_label": recall(mask, parts["edge_label"])}


def quality(kinds: list[str], size: tuple[int, int], seed: int, overlays: Path | None) -> None:
    print(f"quality, {size[0]}x{size[1]}, seed {seed}: IoU, boundary F ({BOUNDARY_TOLERANCE} px); recall of the "
          "antenna, the label and the label on the outline; share of the ring's opening left open; inferred share "
          "of the mask; share of the image")
    columns = (("iou", "IoU"), ("boundary_f", "BF"), ("antenna", "antenna"), ("label", "label"),
               ("edge_label", "edge"), ("hole_open", "open"))
    titles = " ".join(f"{title:>7}" for _, title in columns)
    print(f"{'scene':12} {titles} {'inferred':>9} {'share':>6}  warning")
    with tempfile.TemporaryDirectory() as tmp:
        for kind in kinds:
            scene = make_scene(kind, size=size, seed=seed)
            result = stack(write_stack(scene.stack, Path(tmp) / kind), StackingSettings(), object_mask=True)
            row = score_scene(scene, result)
            cells = [f"{row[key]:7.3f}" if np.isfinite(row.get(key, np.nan)) else f"{'-':>7}" for key, _ in columns]
            print(f"{kind:12} {' '.join(cells)} {100 * row['inferred']:8.1f}% {100 * row['share']:5.1f}%  "
                  f"{'yes' if row['warned'] else ''}", flush=True)
            if overlays is not None:
                truth = scene.in_reference(scene.truth) if scene.truth.any() else None
                _write_overlay(overlays / f"{kind}.png", result, truth)


def cost(sizes: list[str], repeat: int) -> None:
    print(f"\ncost: the plain scene, {repeat} repeats interleaved, best of them; wall from the record (the mask: "
          "timings.mask + encoding its PNG); CPU of the process (the mask: while its stages and the PNG encoder run)")
    print(f"{'frames':>16} {'stack s':>8} {'mask ms':>8} {'wall %':>7} {'stack CPU s':>12} {'mask CPU ms':>12} "
          f"{'CPU %':>6} {'RSS MiB':>8} {'+mask':>6}")
    settings = StackingSettings()
    for size in sizes:
        frames = _cost_frames(size)
        walls, masks, cpus, mask_cpus = [], [], [], []
        for _ in range(repeat):
            begin = time.process_time()
            plain = stack(frames, settings)
            cpus.append(time.process_time() - begin)
            walls.append(plain.record["timings"]["total"])
            with _cpu_in_mask_stages() as stages:
                masked = stack(frames, settings, object_mask=True)
            wall, cpu = time.perf_counter(), time.process_time()
            encode_image(masked.mask, "png")  # as stack_to_file writes it
            masks.append(masked.record["timings"]["mask"] + time.perf_counter() - wall)
            mask_cpus.append(sum(stages.values()) + time.process_time() - cpu)
            if not np.array_equal(plain.image, masked.image):
                raise AssertionError("the mask changed the result")
            del plain, masked
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "out.jpg"
            rss = measure_process(REPO, frames, out, [])[1]
            rss_masked = measure_process(REPO, frames, out, ["--mask", str(Path(tmp) / "mask.png")])[1]
        wall, mask, cpu, mask_cpu = min(walls), min(masks), min(cpus), min(mask_cpus)
        label = f"{size} x {len(frames)}"
        print(f"{label:>16} {wall:8.2f} {1000 * mask:8.0f} {100 * mask / wall:6.1f}% {cpu:12.2f} "
              f"{1000 * mask_cpu:12.0f} {100 * mask_cpu / cpu:5.1f}% {rss:8.0f} {rss_masked - rss:+6.0f}", flush=True)


@contextmanager
def _cpu_in_mask_stages():
    """CPU seconds of the process spent in the mask's two stages, by stage (the dict yielded): each runs when
    nothing else of the stack does (after the measuring threads, after the merge)."""
    spent: dict[str, float] = {}
    stages = ((measure_module, "focus_evidence"), (pipeline_module, "mask_from_evidence"))

    def timed(function):
        def run(*args, **kwargs):
            begin = time.process_time()
            try:
                return function(*args, **kwargs)
            finally:
                spent[function.__name__] = spent.get(function.__name__, 0.0) + time.process_time() - begin
        return run

    for module, name in stages:
        setattr(module, name, timed(getattr(module, name)))
    try:
        yield spent
    finally:
        for module, name in stages:
            setattr(module, name, getattr(mask_module, name))


def real(overlays: Path | None) -> None:
    print("\nreal stacks: the record's mask section")
    folders = {folder.name: folder for root in reversed(REAL_STACKS) if root.is_dir()
               for folder in root.iterdir() if folder.is_dir()}  # a stack in both: the first root's
    for name, folder in sorted(folders.items()):
        frames = sorted(p for p in folder.iterdir() if p.suffix.lower() in _FRAME_SUFFIXES)
        if len(frames) >= 2:
            result = stack(frames, StackingSettings(), object_mask=True)
            account = {k: v for k, v in result.record["mask"].items() if k != "warnings"}
            print(f"{name}: {account}")
            for warning in result.record["mask"]["warnings"]:
                print(f"  warning: {warning}")
            if overlays is not None:
                _write_overlay(overlays / f"real_{name}.png", result, None)


def overlay(image: np.ndarray, mask: np.ndarray, truth: np.ndarray | None = None) -> np.ndarray:
    """The result (H, W, 3) with the backdrop darkened and tinted magenta, the mask's outline white and the
    truth's (bool, optional) red; uint8."""
    shown = image if image.dtype == np.uint8 else (image >> 8).astype(np.uint8)
    backdrop = mask < 128
    out = shown.copy()
    out[backdrop] = (0.45 * shown[backdrop] + np.array([60, 0, 60])).astype(np.uint8)
    out[_outline(mask >= 128)] = (255, 255, 255)
    if truth is not None:
        out[_outline(truth)] = (0, 0, 255)
    return out


def _write_overlay(path: Path, result: StackResult, truth: np.ndarray | None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), overlay(result.image, result.mask, truth))
    cv2.imwrite(str(path.with_name(path.stem + "_mask.png")), result.mask)


def _cost_frames(size: str) -> list[Path]:
    """The plain scene's frames at ``size`` (a key of benchmarks.speed.SIZES), rendered or enlarged once."""
    folder = OUT / "masks" / f"plain-{size}"
    frames = sorted(folder.glob("*.jpg"))
    if frames:
        return frames
    if size == "1.5mp":
        return write_stack(make_scene("plain", size=SIZE).stack, folder)
    folder.mkdir(parents=True, exist_ok=True)
    for source in _cost_frames("1.5mp"):
        enlarged = cv2.resize(cv2.imread(str(source)), SIZES[size], interpolation=cv2.INTER_CUBIC)
        cv2.imwrite(str(folder / source.name), enlarged, [cv2.IMWRITE_JPEG_QUALITY, 90])
    return sorted(folder.glob("*.jpg"))


def _outline(mask: np.ndarray) -> np.ndarray:
    """The pixels of ``mask`` (bool) with a 4-neighbour outside it."""
    inside = mask.view(np.uint8)
    return mask & ~cv2.erode(inside, np.ones((3, 3), np.uint8), borderValue=1).view(bool)


def _distance_to(outline: np.ndarray) -> np.ndarray:
    """Every pixel's distance (px) to the nearest ``outline`` pixel."""
    return cv2.distanceTransform((~outline).view(np.uint8), cv2.DIST_L2, 5)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default=f"{SIZE[0]}x{SIZE[1]}", help="of the quality scenes, WxH")
    parser.add_argument("--scenes", default=",".join(OBJECT_SCENES + EMPTY_SCENES),
                        help="turntable scenes; cloth@S or medium@S put that backdrop S focus steps beyond")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cost", default="1.5mp,16mp", help="frame sizes to time ('' for none)")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--real", action="store_true", help="also the real stacks")
    parser.add_argument("--overlays", type=Path, metavar="DIR", help="write the masks over the results here")
    args = parser.parse_args(argv)
    width, height = (int(v) for v in args.size.split("x"))
    if args.scenes:
        quality(args.scenes.split(","), (width, height), args.seed, args.overlays)
    if args.cost:
        cost(args.cost.split(","), args.repeat)
    if args.real:
        real(args.overlays)


if __name__ == "__main__":
    main()
