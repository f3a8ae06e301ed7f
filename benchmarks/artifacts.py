"""Artifact table: halos, hollow strokes, mottling and detail on the real stacks and the synthetic cases.

    uv run python -m benchmarks.artifacts [--real NAME,...] [--cases strokes,smooth,long] [--size WxH]
        [--set KEY=VALUE ...] [--against REV] [--crops DIR] [--no-focus-stack]

For every real stack in ../shared/data/real and every case of benchmarks/artifact_cases.py it stacks the frames
with our engine (default settings, or ``--set`` StackingSettings), with the engine of git revision ``--against``
(checked out in a temporary worktree) and, where the binary exists, with the C++ focus-stack (``FOCUS_STACK``,
default /work/ext/focus-stack/build/focus-stack; a comparison column only, never part of the project). Every
result is brought into the reference frame's geometry (our engine's already is; other tools' by ECC) and scored
by the measures of benchmarks/quality.py against the same baseline: the frames, aligned independently of the
engine (ECC between neighbours for real stacks, the true transforms for synthetic ones), taking in each tile the
sharpest one ("the frame in focus there"). Synthetic cases also get PSNR, SSIM and PSNR in the band beside strong
edges against ground truth. Renders, registrations and focus-stack's results are cached in benchmarks/out/.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import pickle
import subprocess
import sys
import tempfile
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np

from benchmarks.artifact_cases import ARTIFACT_CASES, make_artifact_stack
from benchmarks.quality import (
    ArtifactRegions,
    ArtifactScales,
    FrameBaseline,
    artifact_maps,
    artifact_regions,
    artifact_scores,
    band_psnr,
    corner_error_rms,
    frame_baseline,
    psnr,
    ssim,
)
from benchmarks.registration import chain_to_reference, ecc_homography, warp_into
from benchmarks.speed import worktree
from benchmarks.synthetic import FocalStack, write_stack
from watcher.config import StackingSettings
from watcher.stacking.pipeline import reference_index

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "benchmarks" / "out" / "artifacts"
REAL = REPO.parent / "shared" / "data" / "real"
FOCUS_STACK = Path(os.environ.get("FOCUS_STACK", "/work/ext/focus-stack/build/focus-stack"))
# Other tools' published results, cropped to their common area: registered and scored like the rest.
SHIPPED = {"focusstack_depthmap": "reference/focus-stack_default.jpg"}


class Crop(NamedTuple):
    """A problem region of a real stack for --crops, in the reference frame's pixels."""

    x: int
    y: int
    width: int
    height: int
    stretch: bool = False  # also show the local contrast x8, where blotches of 1 % must become visible


CROPS = {
    "focusstack_depthmap": {
        "letters_SW1": Crop(820, 150, 500, 300),
        "outline_rectangle": Crop(1380, 360, 300, 400),
        "pad_edge": Crop(200, 400, 500, 350),
        "flat_board": Crop(250, 200, 400, 250, stretch=True),
    },
    "focusstack_pcb": {"letters_MOSI_D11": Crop(740, 800, 560, 260), "header_pins": Crop(1340, 760, 580, 330)},
    "cmcguinness_steps": {
        "flat_background": Crop(120, 80, 450, 300, stretch=True),
        "ring_edge": Crop(560, 330, 500, 300),
    },
}
_LEGEND = """
halo%   light added over the frame in focus per tile on the dark background beside strong edges (8-32 px from
        them, exposure difference taken off), % of full scale; the per-tile frame scores 0
hollow  how much less a bright stroke's interior stands out than its rim, % of its contrast; d: minus the
        per-tile frame's
mottle% RMS band-pass (difference of Gaussians, 3 and 15 px) in regions flat in every frame, % of full scale
detail  RMS gradient where the per-tile frame is not flat, % of full scale per px (blur lowers it)
x       ratio to the frame in focus per tile (the sharpest frame of each 96 px tile)
unaligned  frames the engine left unaligned (identity); align: largest corner error of its transforms, px
PSNR, band (PSNR 3-32 px beside strong edges), SSIM: against ground truth (synthetic cases), dB; the sharpest
        frame's are the best of any single frame in its own geometry"""
_STACK_SCRIPT = """
import json, sys
import cv2
from watcher.config import StackingSettings
from watcher.stacking.pipeline import stack
paths, output, settings = json.loads(sys.argv[1])
result = stack(paths, StackingSettings(**settings))
cv2.imwrite(output, result.image)
print(json.dumps(result.record))
"""


def run_engine(code: Path, paths: list[Path], settings: dict, output: Path) -> tuple[np.ndarray, dict]:
    """Our engine from the source tree ``code``, in a fresh process: (result image, record)."""
    argument = json.dumps([[str(p) for p in paths], str(output), settings])
    done = subprocess.run([sys.executable, "-c", _STACK_SCRIPT, argument], cwd=code, capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": str(code)})
    if done.returncode != 0:
        raise RuntimeError(f"stacking failed ({code}): {done.stderr.strip()[-800:]}")
    return cv2.imread(str(output), cv2.IMREAD_UNCHANGED), json.loads(done.stdout.strip().splitlines()[-1])


def run_focus_stack(paths: list[Path], reference: int, key: str) -> np.ndarray | None:
    """focus-stack's result with its default settings (reference frame as ours), cached; None without binary."""
    if not FOCUS_STACK.exists():
        return None
    output = OUT / "focus-stack" / f"{key}.png"
    if not output.exists():
        output.parent.mkdir(parents=True, exist_ok=True)
        command = [str(FOCUS_STACK), f"--output={output}", f"--reference={reference}", "--threads=2",
                   *map(str, paths)]
        subprocess.run(command, check=True, capture_output=True, cwd=output.parent)
    return cv2.imread(str(output), cv2.IMREAD_UNCHANGED)


def _to_dtype(image: np.ndarray, dtype: np.dtype) -> np.ndarray:
    if image.dtype == dtype:
        return image
    scale = np.iinfo(dtype).max / np.iinfo(image.dtype).max
    return np.clip(np.rint(image.astype(np.float64) * scale), 0, np.iinfo(dtype).max).astype(dtype)


def register(image: np.ndarray, reference_frame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Another tool's result in the reference frame's geometry (ECC homography) and its coverage mask."""
    offset = np.array([[1.0, 0, (image.shape[1] - reference_frame.shape[1]) / 2],
                       [0, 1.0, (image.shape[0] - reference_frame.shape[0]) / 2], [0, 0, 1]])
    warp, _ = ecc_homography(image, reference_frame, start=offset)
    size = (reference_frame.shape[1], reference_frame.shape[0])
    return warp_into(_to_dtype(image, reference_frame.dtype), warp, size)


def _source_hash(*modules: str) -> str:
    digest = hashlib.sha1()
    for module in modules:
        digest.update((REPO / "benchmarks" / module).read_bytes())
    return digest.hexdigest()[:10]


def cached_case(name: str, size: tuple[int, int] | None, dtype: str | None) -> tuple[FocalStack, list[Path]]:
    """Render case ``name`` once (keyed by the renderer's source) and write its frames; (stack, frame paths)."""
    settings = ARTIFACT_CASES[name]
    size = size or settings["size"]
    dtype = np.dtype(dtype or settings.get("dtype", np.uint8))
    key = f"{name}-{size[0]}x{size[1]}-{dtype.name}-{_source_hash('synthetic.py', 'artifact_cases.py')}"
    folder = OUT / "cases" / key
    if not (folder / "case.pickle").exists():
        print(f"rendering {name} at {size[0]}x{size[1]} ({dtype.name}) into {folder} ...", file=sys.stderr,
              flush=True)
        case = make_artifact_stack(name, size=size, dtype=dtype)
        write_stack(case, folder, ext=".jpg" if dtype == np.uint8 else ".png")
        (folder / "case.pickle").write_bytes(pickle.dumps(case))
    case = pickle.loads((folder / "case.pickle").read_bytes())
    return case, sorted(p for p in folder.iterdir() if p.suffix in (".jpg", ".png"))


def cached_chain(key: str, paths: list[Path], reference: int) -> list[np.ndarray]:
    """ECC warps (reference -> frame) of a real stack, computed once."""
    cache = OUT / "registration" / f"{key}-ref{reference}.npy"
    if not cache.exists():
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.save(cache, np.array(chain_to_reference([cv2.imread(str(p), cv2.IMREAD_UNCHANGED) for p in paths],
                                                   reference)))
    return list(np.load(cache))


def unaligned(record: dict) -> str:
    """'n/m': frames other than the reference that the engine left unaligned (identity)."""
    frames = [f for i, f in enumerate(record["frames"]) if i != record["reference"]["index"]]
    return f"{sum(f.get('model') == 'identity' for f in frames)}/{len(frames)}"


def score_stack(
    name: str,
    paths: list[Path],
    reference: int,
    warps: list[np.ndarray],
    results: dict[str, tuple[np.ndarray, np.ndarray, dict]],
    *,
    case: FocalStack | None = None,
    scales: ArtifactScales = ArtifactScales(),
) -> tuple[list[dict], FrameBaseline, ArtifactRegions]:
    """Rows of the table for one stack.

    ``results`` maps a label to (image in the geometry of frame ``reference``, its coverage mask, extra
    columns); ``warps`` bring the frames into that geometry. With ``case`` (synthetic), full-reference columns
    are added and the camera oracle gets a row. Also returns the baseline and the regions.
    """
    frames = [cv2.imread(str(p), cv2.IMREAD_UNCHANGED) for p in paths]
    shape = frames[0].shape
    size = (shape[1], shape[0])

    def aligned():
        for frame, warp in zip(frames, warps, strict=True):
            yield warp_into(frame, warp, size)[0]

    valid = np.ones(shape[:2], bool)
    for warp in warps:
        valid &= warp_into(np.zeros(shape[:2], np.uint8), warp, size)[1]
    for _, mask, _ in results.values():
        valid &= mask
    baseline = frame_baseline(aligned, scales)
    regions = artifact_regions(baseline.per_tile, baseline.roughest, valid, scales)
    rows = []
    truth = case.in_frame_geometry(case.truth, reference) if case is not None else None
    images = {label: image for label, (image, _, _) in results.items()}
    if case is not None:
        images["camera oracle"] = case.camera_oracle(reference)
    for label, image in images.items():
        row = {"stack": name, "image": label, **artifact_scores(artifact_maps(image, scales), regions)}
        row.update(results[label][2] if label in results else {})
        if truth is not None:
            row.update(psnr=psnr(image, truth), band=band_psnr(image, truth, scales), ssim=ssim(image, truth))
        rows.append(row)
    best = {"stack": name, "image": f"sharpest frame ({baseline.sharpest_index})",
            **artifact_scores(baseline.sharpest, regions)}
    if case is not None:
        own_truth = [case.in_frame_geometry(case.truth, i) for i in range(len(frames))]
        best.update(psnr=max(psnr(f, t) for f, t in zip(case.frames, own_truth, strict=True)),
                    band=max(band_psnr(f, t, scales) for f, t in zip(case.frames, own_truth, strict=True)))
    rows.append(best)
    rows.append({"stack": name, "image": "frame in focus per tile", **artifact_scores(baseline.per_tile, regions)})
    return rows, baseline, regions


def _ratio(value: float, base: float) -> float:
    return value / base if base else float("nan")


def print_table(rows: list[dict]) -> None:
    """The table; ratios and differences are relative to the same stack's 'frame in focus per tile' row."""
    print(f"\n{'stack':20} {'image':26} {'PSNR':>6} {'band':>6} {'SSIM':>6} | {'halo%':>6} | {'hollow':>7} "
          f"{'d':>6} | {'mottle%':>7} {'x':>5} | {'detail':>6} {'x':>5} | unaligned  align")
    by_stack: dict[str, list[dict]] = {}
    for row in rows:
        by_stack.setdefault(row["stack"], []).append(row)
    for stack_rows in by_stack.values():
        base = stack_rows[-1]
        for r in stack_rows:
            full = " ".join(f"{r[key]:6.{digits}f}" if key in r else f"{'':6}"
                            for key, digits in (("psnr", 2), ("band", 2), ("ssim", 4)))
            align = f"{r['align']:5.2f}" if "align" in r else ""
            line = (f"{r['stack']:20} {r['image']:26} {full} | {r['halo']:6.2f} | {r['hollow']:7.1f} "
                    f"{r['hollow'] - base['hollow']:+6.1f} | {r['mottle']:7.3f} "
                    f"{_ratio(r['mottle'], base['mottle']):5.2f} | {r['detail']:6.2f} "
                    f"{_ratio(r['detail'], base['detail']):5.2f} | {r.get('unaligned', ''):9} {align}")
            print(line.rstrip())
    print(_LEGEND)


def _stretched(image: np.ndarray) -> np.ndarray:
    """Local contrast x8 around a 25 px Gaussian mean, 8-bit: blotches of 1 % become 20 grey levels."""
    values = image.astype(np.float32)
    return np.clip(128 + 8 * (values - cv2.GaussianBlur(values, (0, 0), 25)), 0, 255).astype(np.uint8)


def write_crops(folder: Path, name: str, crops: dict[str, Crop], images: dict[str, np.ndarray],
                frame_in_focus: Callable[[int, int], tuple[int, np.ndarray]]) -> list[Path]:
    """Side-by-side 100 % PNG crops: one panel per image, then the frame in focus at the crop's centre
    (``frame_in_focus(x, y)`` gives its index and the frame in the reference geometry)."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for region, crop in crops.items():
        index, frame = frame_in_focus(crop.x + crop.width // 2, crop.y + crop.height // 2)
        window = (slice(crop.y, crop.y + crop.height), slice(crop.x, crop.x + crop.width))
        panels = [_to_dtype(image, np.dtype(np.uint8))[window].copy() for image in (*images.values(), frame)]
        rows = [panels, [_stretched(panel) for panel in panels]] if crop.stretch else [panels]
        for row in rows:
            for panel, label in zip(row, [*images, f"frame {index}"], strict=True):
                for colour, width in (((0, 0, 0), 4), ((255, 255, 255), 1)):
                    cv2.putText(panel, label, (6, 22), cv2.FONT_HERSHEY_SIMPLEX, 0.6, colour, width, cv2.LINE_AA)
        path = folder / f"{name}-{region}.png"
        cv2.imwrite(str(path), np.vstack([np.hstack(row) for row in rows]))
        written.append(path)
    return written


def engine_columns(record: dict, case: FocalStack | None) -> dict:
    """The engine's own columns: frames left unaligned and, with ground truth, the largest corner error (px) of
    its transforms."""
    columns = {"unaligned": unaligned(record)}
    if case is not None:
        reference = record["reference"]["index"]
        columns["align"] = max(corner_error_rms(np.array(f["transform"]), case.true_alignment(i, reference),
                                                case.truth.shape) for i, f in enumerate(record["frames"]))
    return columns


def stack_results(
    name: str, paths: list[Path], reference: int, codes: list[tuple[str, Path]], settings: dict, scratch: Path,
    with_focus_stack: bool, case: FocalStack | None = None,
) -> dict[str, tuple[np.ndarray, np.ndarray, dict]]:
    """label -> (result in the reference frame's geometry, its coverage, extra columns), for every engine in
    ``codes``, focus-stack (if asked and built) and any shipped result of another tool."""
    reference_frame = cv2.imread(str(paths[reference]), cv2.IMREAD_UNCHANGED)
    # A 16-bit stack is stacked to a 16-bit result (StackingSettings' default output is 8-bit JPEG).
    own = {"output_format": "png", **settings} if reference_frame.dtype == np.uint16 else settings
    results = {}
    for label, code in codes:
        image, record = run_engine(code, paths, own, scratch / "out.png")
        results[label] = (image, np.ones(image.shape[:2], bool), engine_columns(record, case))
    others = []
    if with_focus_stack:
        fs = run_focus_stack(paths, reference, f"{name}-{paths[0].parent.name}-ref{reference}")
        if fs is not None:
            others.append(("focus-stack", fs))
    if name in SHIPPED:
        others.append(("focus-stack (shipped)", cv2.imread(str(REAL / name / SHIPPED[name]), cv2.IMREAD_UNCHANGED)))
    for label, image in others:
        results[label] = (*register(image, reference_frame), {})
    return results


def _frame_in_focus(paths: list[Path], warps: list[np.ndarray], baseline: FrameBaseline, tile: int):
    """(x, y) -> (index, frame in the reference geometry) of the frame the baseline took for that tile."""

    def at(x: int, y: int) -> tuple[int, np.ndarray]:
        index = int(baseline.owner[y // tile, x // tile])
        frame = cv2.imread(str(paths[index]), cv2.IMREAD_UNCHANGED)
        return index, warp_into(frame, warps[index], (frame.shape[1], frame.shape[0]))[0]

    return at


def main(argv: list[str] | None = None) -> list[dict]:
    """Run the benchmark; print the table and return its rows."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--real", default=",".join(sorted(p.name for p in REAL.iterdir() if p.is_dir()))
                        if REAL.is_dir() else "", help="real stacks under ../shared/data/real ('' for none)")
    parser.add_argument("--cases", default=",".join(ARTIFACT_CASES), help="synthetic cases ('' for none)")
    parser.add_argument("--size", help="render size WxH of the synthetic cases (default: each case's own)")
    parser.add_argument("--dtype", choices=("uint8", "uint16"), help="frames' dtype (default: each case's own)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="StackingSettings")
    parser.add_argument("--against", metavar="REV", help="also run the engine of git revision REV")
    parser.add_argument("--crops", type=Path, metavar="DIR", help="write 100 %% crops of the problem regions")
    parser.add_argument("--no-focus-stack", action="store_true", help="skip the focus-stack column")
    args = parser.parse_args(argv)
    settings = dict(item.split("=", 1) for item in args.set)
    size = tuple(int(v) for v in args.size.split("x")) if args.size else None
    stacks = [(name, sorted(p for p in (REAL / name).iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png")),
               None) for name in filter(None, args.real.split(","))]
    for name in filter(None, args.cases.split(",")):
        case, paths = cached_case(name, size, args.dtype)
        stacks.append((name, paths, case))
    rows = []
    with tempfile.TemporaryDirectory() as tmp, (worktree(args.against) if args.against else nullcontext()) as old:
        codes = [("ours", REPO)] + ([(f"ours @{args.against}", old)] if old else [])
        for name, paths, case in stacks:
            print(f"{name}: stacking ...", file=sys.stderr, flush=True)
            reference = reference_index(len(paths), StackingSettings(**settings).reference)
            if case is None:
                warps = cached_chain(name, paths, reference)
            else:
                warps = [case.true_alignment(i, reference) for i in range(len(paths))]
            results = stack_results(name, paths, reference, codes, settings, Path(tmp), not args.no_focus_stack,
                                    case)
            print(f"{name}: scoring ...", file=sys.stderr, flush=True)
            stack_rows, baseline, _ = score_stack(name, paths, reference, warps, results, case=case)
            rows.extend(stack_rows)
            if args.crops and case is None and name in CROPS:
                images = {label: image for label, (image, _, _) in results.items()}
                in_focus = _frame_in_focus(paths, warps, baseline, ArtifactScales().tile)
                for path in write_crops(args.crops, name, CROPS[name], images, in_focus):
                    print(f"  crop {path}", file=sys.stderr)
    print_table(rows)
    return rows


if __name__ == "__main__":
    main()
