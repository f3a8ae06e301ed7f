"""What a result says about itself besides its pixels: EXIF fields and an ICC colour profile.

* :func:`srgb_profile` -- an ICC v4 sRGB display profile, generated here from the published definition (IEC
  61966-2-1 primaries and tone curve, D65 white adapted to ICC's D50 with Bradford), about 500 bytes: no profile
  file from elsewhere, so no licence to carry. Raw stacks are developed into sRGB and tagged with it.
* :func:`camera_fields` -- make, model, exposure, f-number, ISO, focal length (and its 35 mm equivalent, the focal
  plane resolution), date and orientation from TIFF structured metadata: a raw file's IFDs or a JPEG's EXIF
  block (which is TIFF-structured too).
* :func:`exif_block` -- those fields as an EXIF block, for OpenCV's ``imencodeWithMetadata`` (JPEG, PNG);
  :func:`result_tags` -- the same as TIFF tags, with an ICC profile, for TIFF results (:mod:`watcher.stacking.tiff`).
"""

from __future__ import annotations

import functools
import struct

import numpy as np

from watcher.stacking.exif import TAGS
from watcher.stacking.rawfile import Damaged, NotTiff, TiffWalk, walk_tiff
from watcher.stacking.tiff import ASCII, LONG, RATIONAL, SHORT, UNDEFINED, Tags, ifd

_ORIENTATION, _SOFTWARE, _ICC, _EXIF_IFD = 274, 305, 34675, 34665
_EXPOSURE, _FNUMBER, _ISO, _EXIF_VERSION, _TAKEN = 33434, 33437, 34855, 36864, 36867
# the camera data photogrammetry tools read: numbered where they are added to frames that lack them (exif.TAGS)
_MAKE, _MODEL, _FOCAL, _FOCAL_35MM, _PLANE_X, _PLANE_Y, _PLANE_UNIT = (TAGS[name][0] for name in (
    "Make", "Model", "FocalLength", "FocalLengthIn35mmFilm", "FocalPlaneXResolution", "FocalPlaneYResolution",
    "FocalPlaneResolutionUnit"))
_FIELDS = {"make": _MAKE, "model": _MODEL, "orientation": _ORIENTATION, "exposure": _EXPOSURE, "fnumber": _FNUMBER,
           "iso": _ISO, "taken": _TAKEN, "focal": _FOCAL, "focal_35mm": _FOCAL_35MM, "focal_plane_x": _PLANE_X,
           "focal_plane_y": _PLANE_Y, "focal_plane_unit": _PLANE_UNIT}

# ICC: D50 (the profile connection space's white), the Bradford cone matrix, sRGB's primaries and white (xy)
_D50 = np.array([0.9642, 1.0, 0.8249])
_BRADFORD = np.array([[0.8951, 0.2664, -0.1614], [-0.7502, 1.7135, 0.0367], [0.0389, -0.0685, 1.0296]])
_SRGB_XY = ((0.64, 0.33), (0.30, 0.60), (0.15, 0.06))
_D65_XY = (0.3127, 0.3290)
# sRGB's tone curve as an ICC parametric curve of type 3: Y = (a X + b)^g for X >= d, else c X
_SRGB_CURVE = (2.4, 1 / 1.055, 0.055 / 1.055, 1 / 12.92, 0.04045)


def _xyz(x: float, y: float) -> np.ndarray:
    return np.array([x / y, 1.0, (1 - x - y) / y])


def srgb_to_xyz_d50() -> tuple[np.ndarray, np.ndarray]:
    """(3x3 linear sRGB -> XYZ relative to D50, the Bradford adaptation D65 -> D50): the profile's colorants."""
    primaries = np.column_stack([_xyz(*xy) for xy in _SRGB_XY])
    white = _xyz(*_D65_XY)
    to_xyz = primaries * np.linalg.solve(primaries, white)
    adapt = np.linalg.inv(_BRADFORD) @ np.diag((_BRADFORD @ _D50) / (_BRADFORD @ white)) @ _BRADFORD
    return adapt @ to_xyz, adapt


def _s15(value: float) -> bytes:
    return struct.pack(">i", round(value * 65536))


def _text(text: str) -> bytes:
    data = text.encode("utf-16-be")
    return b"mluc" + bytes(4) + struct.pack(">II", 1, 12) + b"enUS" + struct.pack(">II", len(data), 28) + data


@functools.cache
def srgb_profile() -> bytes:
    """An ICC v4.3 matrix/TRC display profile of sRGB (the same bytes on every call)."""
    to_xyz, adapt = srgb_to_xyz_d50()
    curve = b"para" + bytes(4) + struct.pack(">HH", 3, 0) + b"".join(_s15(p) for p in _SRGB_CURVE)
    tags = [(b"desc", _text("sRGB (focus-watcher)")), (b"cprt", _text("No copyright, use freely")),
            (b"wtpt", b"XYZ " + bytes(4) + b"".join(_s15(v) for v in _D50)),
            (b"chad", b"sf32" + bytes(4) + b"".join(_s15(v) for v in adapt.flatten())),
            *((sig, b"XYZ " + bytes(4) + b"".join(_s15(v) for v in to_xyz[:, k]))
              for k, sig in enumerate((b"rXYZ", b"gXYZ", b"bXYZ"))),
            (b"rTRC", curve), (b"gTRC", curve), (b"bTRC", curve)]  # one curve, three table entries
    offset = 128 + 4 + 12 * len(tags)
    table, blob, placed = b"", b"", {}
    for signature, data in tags:
        if data not in placed:
            placed[data] = offset + len(blob)
            blob += data + bytes(-len(data) % 4)
        table += signature + struct.pack(">II", placed[data], len(data))
    size = offset + len(blob)
    header = struct.pack(">I4sI4s4s4s6H4s4sI4s4sQI", size, bytes(4), 0x04300000, b"mntr", b"RGB ", b"XYZ ",
                         2024, 1, 1, 0, 0, 0, b"acsp", bytes(4), 0, bytes(4), bytes(4), 0, 0)
    header += b"".join(_s15(v) for v in _D50) + bytes(4 + 16 + 28)  # illuminant, creator, profile ID, reserved
    return header + struct.pack(">I", len(tags)) + table + blob


def camera_fields(walk: TiffWalk) -> dict:
    """Make, model, exposure (s), f-number, ISO, focal length (mm; its 35 mm equivalent, the focal plane's
    resolution and unit), date ("YYYY:MM:DD HH:MM:SS") and orientation from IFD0 and the EXIF IFD of a
    TIFF-structured file or EXIF block; absent ones left out.
    (PiDNG writes ExposureTime and ISO into IFD0, cameras into the EXIF IFD: both are looked at.)"""
    found: dict = {}
    for directory in walk.ifds:
        if directory.role not in ("ifd0", "exif"):
            continue
        for key, tag in _FIELDS.items():
            value = directory.get(tag)
            if isinstance(value, str):
                value = value.strip()
            if value not in (None, "", 0, 0.0) and key not in found:
                found[key] = value
    return found


def fields_of_exif(exif: bytes | None) -> dict:
    """:func:`camera_fields` of a TIFF-structured EXIF block; {} for none or one that does not parse."""
    if not exif:
        return {}
    try:
        return camera_fields(walk_tiff(exif))
    except (NotTiff, Damaged):
        return {}


def _rational(value: float) -> tuple[int, int]:
    if value >= 1:
        return round(value * 1000), 1000
    denominator = round(1 / value)
    if abs(1 / value - denominator) < 1e-6:
        return 1, denominator  # exposure times as photographers write them: 1/60
    return round(value * 1_000_000), 1_000_000


def result_tags(fields: dict, icc: bytes | None = None) -> tuple[Tags, Tags]:
    """(IFD0 tags, EXIF IFD tags) of ``fields`` (see :func:`camera_fields`) and an ICC profile."""
    ifd0: Tags = {_ORIENTATION: (SHORT, [int(fields.get("orientation", 1))])}
    exif: Tags = {_EXIF_VERSION: (UNDEFINED, b"0232")}
    for key in ("make", "model"):
        if fields.get(key):
            ifd0[_FIELDS[key]] = (ASCII, str(fields[key]))
    if fields.get("software"):
        ifd0[_SOFTWARE] = (ASCII, str(fields["software"]))
    if icc:
        ifd0[_ICC] = (UNDEFINED, icc)
    for key in ("exposure", "fnumber", "focal", "focal_plane_x", "focal_plane_y"):
        if fields.get(key):
            exif[_FIELDS[key]] = (RATIONAL, [_rational(float(fields[key]))])
    for key in ("iso", "focal_35mm", "focal_plane_unit"):
        if fields.get(key):
            exif[_FIELDS[key]] = (SHORT, [min(65535, int(fields[key]))])
    if fields.get("taken"):
        exif[_TAKEN] = (ASCII, str(fields["taken"]))
    return ifd0, exif


def exif_block(fields: dict) -> bytes:
    """A little-endian TIFF-structured EXIF block: IFD0 (Make, Model, Orientation, Software) pointing to an EXIF
    IFD (ExposureTime, FNumber, ISO, DateTimeOriginal, FocalLength and the rest of the camera data), as OpenCV
    writes into JPEG and PNG."""
    ifd0, exif = result_tags(fields)
    ifd0[_EXIF_IFD] = (LONG, [0])  # placeholder of the final size
    exif_at = 8 + len(ifd("<", 8, ifd0))
    exif_at += exif_at & 1
    ifd0[_EXIF_IFD] = (LONG, [exif_at])
    head = b"II*\0" + struct.pack("<I", 8) + ifd("<", 8, ifd0)
    return head + bytes(exif_at - len(head)) + ifd("<", exif_at, exif)
