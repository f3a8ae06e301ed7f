"""A synthetic camera that writes DNGs the way Picamera2 does (through PiDNG), for tests and benchmarks.

Pure numpy + struct, no PiDNG: PiDNG on PyPI is an sdist only (4.0.9, 2022: a C extension to build on every
machine) and writes an older layout than the one Raspberry Pi OS ships today. This writer reproduces PiDNG's tags
and its three layouts -- one tile (PyPI 4.0.9), a strip with stray TileWidth/TileLength tags (2022-08 .. 2025-01),
one strip (since 2025-01) -- closely enough that LibRaw reads the identical CFA, white balance and colour matrix
from both (checked against PiDNG 4.0.9 and master e2f5a8d), and adds layouts cameras use (big-endian, a preview
IFD0 with the raw image in a SubIFD, several strips) so that the structural check is tested against them.

Colour model (what the Raspberry Pi ISP does, and what PiDNG writes down):

    scene_linear_sRGB = CCM @ diag(gains) @ camera_raw_normalised

``gains`` = (R gain, 1, B gain) = Picamera2's ``ColourGains`` (AsShotNeutral = 1 / gains), ``CCM`` =
Picamera2's ``ColourCorrectionMatrix`` (rows sum to 1: white stays white). PiDNG stores
``ColorMatrix1 = inv(M_sRGB->XYZ @ CCM @ diag(gains))`` with CalibrationIlluminant1 = D65. The synthetic camera
inverts that: ``camera_raw = diag(1/gains) @ inv(CCM) @ scene``; LibRaw then recovers ``scene`` exactly
(checked with LibRaw 0.22: patch errors below 5e-4 at 12 bits).
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

# sRGB (D65) -> XYZ, as PiDNG uses it (Lindbloom)
SRGB_TO_XYZ = np.array(
    [[0.4124564, 0.3575761, 0.1804375], [0.2126729, 0.7151522, 0.0721750], [0.0193339, 0.1191920, 0.9503041]]
)
# A plausible Pi camera CCM (rows sum to 1), in the range of the IMX519/IMX477 tuning files' CCMs.
DEFAULT_CCM = np.array([[1.80, -0.62, -0.18], [-0.30, 1.55, -0.25], [0.02, -0.58, 1.56]])

CFA_CODES = {"RGGB": (0, 1, 1, 2), "BGGR": (2, 1, 1, 0), "GRBG": (1, 0, 2, 1), "GBRG": (1, 2, 0, 1)}

# TIFF field types
BYTE, ASCII, SHORT, LONG, RATIONAL, UNDEFINED, SRATIONAL, IFD = 1, 2, 3, 4, 5, 7, 10, 13
_TYPE_SIZE = {BYTE: 1, ASCII: 1, SHORT: 2, LONG: 4, RATIONAL: 8, UNDEFINED: 1, SRATIONAL: 8, IFD: 4}


@dataclass
class SyntheticCamera:
    """What a Picamera2 capture knows about itself (its metadata) and how the file is laid out."""

    bits: int = 12  # 10 (Pi 4, IMX519 CSI2P unpacked by PiDNG), 12, or 16 (Pi 5, PISP_COMP1 decompressed)
    black: int = 256  # in `bits` units (Picamera2: SensorBlackLevels >> (16 - bits))
    white: int | None = None  # default (1 << bits) - 1, as PiDNG writes
    gains: tuple[float, float] = (1.9, 1.6)  # ColourGains (R, B)
    ccm: np.ndarray = field(default_factory=lambda: DEFAULT_CCM.copy())
    cfa: str = "RGGB"
    make: str = "RaspberryPi"
    model: str = "PiDNG / PiCamera2"  # newer PiDNG + Picamera2 >= 0.3.28: the sensor name, e.g. "imx519"
    exposure_us: int = 20000
    analogue_gain: float = 1.0
    orientation: int = 1
    layout: str = "strip"  # "strip" (PiDNG >= 2025-01), "strip+tiletags" (2022-08..2025-01), "tile" (PyPI 4.0.9)
    rows_per_strip: int | None = None  # None: one strip for the whole image, no RowsPerStrip tag (as PiDNG)
    byteorder: str = "<"  # "<" II (PiDNG) or ">" MM (some cameras)
    preview_ifd0: bool = False  # True: IFD0 a small RGB preview, raw in a SubIFD (how cameras' DNGs are laid out)
    noise: float = 0.0  # read noise, in units of `bits` (plus shot noise of the same order), 0 = none
    seed: int = 0
    # Not Picamera2's, but DNGs other writers make, for the paths that go through LibRaw: an (identity)
    # LinearizationTable, or a LinearRaw image (three samples per pixel, already demosaicked; 16-bit only).
    linearization: bool = False
    linear_raw: bool = False

    @property
    def white_level(self) -> int:
        return (1 << self.bits) - 1 if self.white is None else self.white

    def color_matrix1(self) -> np.ndarray:
        """XYZ -> camera, as PiDNG computes it from the ISP's CCM and gains."""
        gain = np.diag([self.gains[0], 1.0, self.gains[1]])
        return np.linalg.inv(SRGB_TO_XYZ @ self.ccm @ gain)

    def as_shot_neutral(self) -> tuple[float, float, float]:
        return (1.0 / self.gains[0], 1.0, 1.0 / self.gains[1])


def _counts(plane: np.ndarray, row: np.ndarray, camera: SyntheticCamera, rng: np.random.Generator) -> np.ndarray:
    """Raw counts (uint16) of one camera channel (``row`` of scene -> camera) for scene pixels ``plane``."""
    value = plane[..., 0] * row[0] + plane[..., 1] * row[1] + plane[..., 2] * row[2]
    counts = value * np.float32(camera.white_level - camera.black)
    if camera.noise:
        sigma = np.sqrt(np.float32(camera.noise) ** 2 + np.maximum(counts, 0) * np.float32(camera.noise / 8))
        counts += rng.standard_normal(counts.shape, dtype=np.float32) * sigma
    counts += np.float32(camera.black)
    np.clip(counts, 0, camera.white_level, out=counts)
    return np.rint(counts).astype(np.uint16)


def _to_camera(camera: SyntheticCamera) -> np.ndarray:
    return (np.diag([1 / camera.gains[0], 1.0, 1 / camera.gains[1]]) @ np.linalg.inv(camera.ccm)).astype(np.float32)


def mosaic(scene_rgb: np.ndarray, camera: SyntheticCamera) -> np.ndarray:
    """Linear scene (H, W, 3) RGB in [0, 1] -> the camera's CFA image (H, W) uint16 in raw counts.

    Scene 1.0 (white) reaches the sensor's white level in green; brighter or more saturated light clips at the
    white level, as a sensor does.
    """
    height, width = scene_rgb.shape[:2]
    if height % 2 or width % 2:
        raise ValueError("a Bayer image needs even width and height")
    codes = CFA_CODES[camera.cfa]
    rng = np.random.default_rng(camera.seed)
    out = np.empty((height, width), np.uint16)
    scene = scene_rgb.astype(np.float32, copy=False)
    to_camera = _to_camera(camera)
    for dy in (0, 1):
        for dx in (0, 1):
            out[dy::2, dx::2] = _counts(scene[dy::2, dx::2], to_camera[codes[2 * dy + dx]], camera, rng)
    return out


def camera_rgb(scene_rgb: np.ndarray, camera: SyntheticCamera) -> np.ndarray:
    """Linear scene (H, W, 3) RGB in [0, 1] -> the camera's (not white-balanced) RGB (H, W, 3) uint16 in raw
    counts: a LinearRaw DNG's samples."""
    rng = np.random.default_rng(camera.seed)
    scene = scene_rgb.astype(np.float32, copy=False)
    to_camera = _to_camera(camera)
    return np.stack([_counts(scene, to_camera[c], camera, rng) for c in range(3)], axis=-1)


def pack(cfa: np.ndarray, bits: int, byteorder: str = "<") -> bytes:
    """Pack samples MSB-first into bytes, as TIFF (and PiDNG's pack10/pack12) does; 16-bit in the file's order."""
    if bits == 16:
        return cfa.astype(byteorder + "u2").tobytes()
    if bits == 8:
        return cfa.astype(np.uint8).tobytes()
    data = cfa.astype(np.uint16)
    if bits == 12:
        if data.shape[1] % 2:
            raise ValueError("12-bit packing needs an even width")
        a, b = data[:, 0::2], data[:, 1::2]
        out = np.empty((data.shape[0], data.shape[1] // 2, 3), np.uint8)
        out[..., 0] = a >> 4
        out[..., 1] = ((a & 0xF) << 4) | (b >> 8)
        out[..., 2] = b & 0xFF
        return out.tobytes()
    if bits == 10:
        if data.shape[1] % 4:
            raise ValueError("10-bit packing needs a width that is a multiple of 4")
        p = [data[:, k::4].astype(np.uint64) for k in range(4)]
        word = (p[0] << 30) | (p[1] << 20) | (p[2] << 10) | p[3]  # 40 bits, MSB first
        out = np.empty((data.shape[0], data.shape[1] // 4, 5), np.uint8)
        for k in range(5):
            out[..., k] = (word >> np.uint64(8 * (4 - k))) & np.uint64(0xFF)
        return out.tobytes()
    raise ValueError(f"unsupported bit depth {bits}")


def _rational(value: float, denominator: int = 10000) -> tuple[int, int]:
    return (round(value * denominator), denominator)


class _TiffBuilder:
    """Minimal classic-TIFF writer: IFDs with their out-of-line values, then the image data."""

    def __init__(self, byteorder: str) -> None:
        self.bo = byteorder

    def encode(self, kind: int, values) -> tuple[int, bytes]:
        bo = self.bo
        if kind == ASCII:
            data = values.encode("ascii") + b"\x00"
            return len(data), data
        if kind in (BYTE, UNDEFINED):
            data = bytes(values)
            return len(data), data
        if kind == SHORT:
            return len(values), struct.pack(f"{bo}{len(values)}H", *values)
        if kind in (LONG, IFD):
            return len(values), struct.pack(f"{bo}{len(values)}I", *values)
        if kind == RATIONAL:
            flat = [int(x) for pair in values for x in pair]
            return len(values), struct.pack(f"{bo}{len(flat)}I", *flat)
        if kind == SRATIONAL:
            flat = [int(x) for pair in values for x in pair]
            return len(values), struct.pack(f"{bo}{len(flat)}i", *flat)
        raise ValueError(kind)

    def write_ifd(self, buf: bytearray, start: int, tags: dict[int, tuple[int, object]], next_ifd: int) -> int:
        """Write the IFD at `start`, its big values after it; returns the offset after everything written."""
        bo = self.bo
        entries = sorted(tags.items())
        data_at = start + 2 + 12 * len(entries) + 4
        data_at += data_at & 1
        table = bytearray(struct.pack(f"{bo}H", len(entries)))
        blobs = bytearray()
        for tag, (kind, values) in entries:
            count, data = self.encode(kind, values)
            if len(data) <= 4:
                field = data.ljust(4, b"\x00")
            else:
                field = struct.pack(f"{bo}I", data_at + len(blobs))
                blobs += data
                if len(blobs) & 1:
                    blobs += b"\x00"
            table += struct.pack(f"{bo}HHI", tag, kind, count) + field
        table += struct.pack(f"{bo}I", next_ifd)
        end = start + len(table)
        if end & 1:
            end += 1
        buf[start : start + len(table)] = table
        buf[data_at : data_at + len(blobs)] = blobs
        return data_at + len(blobs)

    def ifd_bytes(self, tags: dict[int, tuple[int, object]]) -> int:
        entries = sorted(tags.items())
        size = 2 + 12 * len(entries) + 4
        size += size & 1
        for _, (kind, values) in entries:
            _, data = self.encode(kind, values)
            if len(data) > 4:
                size += len(data) + (len(data) & 1)
        return size


def raw_tags(camera: SyntheticCamera, width: int, height: int) -> dict[int, tuple[int, object]]:
    """The raw IFD's tags, as PiDNG's Picamera2Camera + PICAM2DNG write them (image-data tags added later)."""
    cm1 = camera.color_matrix1()
    identity = [(1, 1), (0, 1), (0, 1), (0, 1), (1, 1), (0, 1), (0, 1), (0, 1), (1, 1)]
    neutral = [(10000, int(g * 10000)) for g in (camera.gains[0], 1.0, camera.gains[1])]
    iso = int(camera.analogue_gain * 100)
    tags: dict[int, tuple[int, object]] = {
        254: (LONG, [0]),  # NewSubfileType: main image
        256: (LONG, [width]),
        257: (LONG, [height]),
        258: (SHORT, [camera.bits]),
        259: (SHORT, [1]),  # uncompressed (Picamera2's default compress_level 0)
        262: (SHORT, [32803]),  # CFA
        271: (ASCII, camera.make),
        272: (ASCII, camera.model),
        274: (SHORT, [camera.orientation]),
        277: (SHORT, [1]),
        305: (ASCII, "PiDNG"),
        339: (SHORT, [1]),  # SampleFormat uint
        33421: (SHORT, [2, 2]),  # CFARepeatPatternDim
        33422: (BYTE, list(CFA_CODES[camera.cfa])),
        33434: (RATIONAL, [(1, int(1 / (camera.exposure_us * 1e-6)))]),  # ExposureTime, as PiDNG (1/x)
        34855: (SHORT, [iso]),
        50706: (BYTE, [1, 4, 0, 0]),
        50707: (BYTE, [1, 0, 0, 0]),
        50708: (ASCII, camera.model),  # UniqueCameraModel: PiDNG omits it; LibRaw does not need it
        50713: (SHORT, [2, 2]),
        50714: (SHORT, [camera.black] * 4),
        50717: (SHORT, [camera.white_level]) if camera.white_level < 65536 else (LONG, [camera.white_level]),
        50721: (SRATIONAL, [_rational(v) for v in cm1.flatten()]),
        50723: (SRATIONAL, identity),
        50724: (SRATIONAL, identity),
        50728: (RATIONAL, neutral),
        50730: (SRATIONAL, [(1, 1)]),  # BaselineExposure 1, as PiDNG
        50778: (SHORT, [21]),  # D65
        50781: (BYTE, list(b"123456789")),
        50936: (ASCII, "PiDNG / PiCamera2 Profile"),
        50941: (LONG, [3]),
    }
    del tags[50708]  # keep exactly PiDNG's set
    return tags


def write_dng(target: str | Path | io.BufferedIOBase | None, scene_rgb: np.ndarray | None = None, *,
              camera: SyntheticCamera | None = None, cfa: np.ndarray | None = None) -> bytes:
    """Write a DNG of a linear scene (H, W, 3) RGB float in [0, 1] (or of a ready CFA image) as Picamera2 would.

    Returns the file's bytes (also written to ``target`` when given: a path or a binary file).
    """
    camera = camera or SyntheticCamera()
    if cfa is None:
        cfa = camera_rgb(scene_rgb, camera) if camera.linear_raw else mosaic(scene_rgb, camera)
    height, width = cfa.shape[:2]
    bo = camera.byteorder
    builder = _TiffBuilder(bo)
    tags = raw_tags(camera, width, height)
    if camera.linearization:
        tags[50712] = (SHORT, list(range(camera.white_level + 1)))
    if camera.linear_raw:  # three samples per pixel, no CFA
        tags.update({258: (SHORT, [camera.bits] * 3), 262: (SHORT, [34892]), 277: (SHORT, [3]),
                     50713: (SHORT, [1, 1]), 50714: (SHORT, [camera.black] * 3)})
        del tags[33421], tags[33422]

    # image data: strips or one tile, each row packed on its own (rows start on a byte boundary)
    if camera.layout == "tile":
        chunks = [pack(cfa, camera.bits, bo)]
    else:
        rows = camera.rows_per_strip or height
        chunks = [pack(cfa[y : y + rows], camera.bits, bo) for y in range(0, height, rows)]
    n = len(chunks)
    if camera.layout == "tile":
        tags[322] = (SHORT, [width])
        tags[323] = (SHORT, [height])
        off_tag, count_tag = 324, 325
    else:
        if camera.layout == "strip+tiletags":
            tags[322] = (SHORT, [width])
            tags[323] = (SHORT, [height])
        if camera.rows_per_strip:
            tags[278] = (LONG, [camera.rows_per_strip])
        off_tag, count_tag = 273, 279
    tags[off_tag] = (LONG, [0] * n)  # placeholders, same size as the final values
    tags[count_tag] = (LONG, [len(c) for c in chunks])

    preview_tags: dict[int, tuple[int, object]] | None = None
    preview = b""
    if camera.preview_ifd0:
        # As cameras lay DNGs out (DNG spec 1.4, ch. 3): IFD0 a small 8-bit RGB preview (NewSubfileType 1) with the
        # camera-wide tags (make, model, DNG version, colour calibration); the raw image in a SubIFD.
        ph, pw = max(1, height // 16), max(1, width // 16)
        preview = np.full((ph, pw, 3), 128, np.uint8).tobytes()
        preview_tags = {
            254: (LONG, [1]), 256: (LONG, [pw]), 257: (LONG, [ph]), 258: (SHORT, [8, 8, 8]), 259: (SHORT, [1]),
            262: (SHORT, [2]), 273: (LONG, [0]), 277: (SHORT, [3]), 278: (LONG, [ph]), 279: (LONG, [len(preview)]),
            330: (IFD, [0]),
        }
        for key in (271, 272, 274, 305, 33434, 34855, 50706, 50707, 50721, 50723, 50724, 50728, 50730, 50778,
                    50781, 50936, 50941):
            preview_tags[key] = tags.pop(key)

    # layout: header | IFD0 (+data) | [raw SubIFD (+data)] | preview strip | raw chunks
    header = 8
    first_size = builder.ifd_bytes(preview_tags if preview_tags else tags)
    sub_at = header + first_size
    sub_size = builder.ifd_bytes(tags) if preview_tags else 0
    data_at = sub_at + sub_size
    data_at += (-data_at) % 4
    if preview_tags:
        preview_at = data_at
        data_at = preview_at + len(preview)
        data_at += (-data_at) % 4
        preview_tags[273] = (LONG, [preview_at])
        preview_tags[330] = (IFD, [sub_at])
    offsets = []
    pos = data_at
    for chunk in chunks:
        offsets.append(pos)
        pos += len(chunk)
        pos += (-pos) % 2
    tags[off_tag] = (LONG, offsets)
    total = pos
    buf = bytearray(total)
    buf[0:8] = (b"II" if bo == "<" else b"MM") + struct.pack(f"{bo}HI", 42, header)
    if preview_tags:
        builder.write_ifd(buf, header, preview_tags, 0)
        builder.write_ifd(buf, sub_at, tags, 0)
        buf[preview_tags[273][1][0] : preview_tags[273][1][0] + len(preview)] = preview
    else:
        builder.write_ifd(buf, header, tags, 0)
    for offset, chunk in zip(offsets, chunks):
        buf[offset : offset + len(chunk)] = chunk
    data = bytes(buf)
    if target is not None:
        if isinstance(target, (str, Path)):
            Path(target).write_bytes(data)
        else:
            target.write(data)
    return data


def patch_scene(rows: int = 4, cols: int = 6, patch: int = 16, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """A linear test scene of flat colour patches, the last row a grey ramp: (scene (H, W, 3) RGB float32,
    patch colours (rows, cols, 3)). Flat patches let colour be measured away from demosaicking's edges."""
    rng = np.random.default_rng(seed)
    colours = rng.uniform(0.05, 0.8, (rows, cols, 3)).astype(np.float32)
    colours[-1] = np.linspace(0.05, 0.9, cols)[:, None]
    return np.repeat(np.repeat(colours, patch, axis=0), patch, axis=1), colours
