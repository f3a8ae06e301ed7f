"""Camera data for photogrammetry tools: Make, FocalLength, FocalLengthIn35mmFilm and FocalPlane*Resolution,
added to a result whose reference frame lacks them.

OpenScan3 writes only Model (libcamera's sensor name), Orientation, Software, exposure and date into its frames,
so COLMAP, Meshroom/AliceVision, Metashape and RealityCapture start from a guessed focal length, and COLMAP gives
every image its own camera (its camera key needs Make). The cameras OpenScan rigs use are known here by that
Model string; anything else comes from ``stacking.camera`` (:class:`~watcher.config.CameraSettings`).

FocalLength is the lens's and never changes with a crop. FocalLengthIn35mmFilm is for the part of the sensor
imaged in *this* file: OpenScan3 crops the sensor 1:1 (by default to 90 % x 90 %), so it is the focal length times
43.27 mm (the 36 x 24 mm diagonal) over the file's diagonal in mm (its pixels times the pitch). COLMAP and
RealityCapture take that value first, AliceVision when its sensor database lacks the camera.
FocalPlaneX/YResolution (pixels per cm) is 1 / pitch: it changes with binning, not with a crop.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

from watcher.config import CameraSettings
from watcher.stacking.exif import ExifError, Value, add_tags, read_tags

FULL_FRAME_DIAGONAL_MM = math.hypot(36.0, 24.0)  # 43.27 mm: what "35 mm equivalent" is relative to
_CM = 3  # FocalPlaneResolutionUnit: centimetre
_FOCAL_PLANE = ("FocalPlaneXResolution", "FocalPlaneYResolution", "FocalPlaneResolutionUnit")


@dataclass(frozen=True)
class Camera:
    """A camera module as its maker describes it.

    Attributes
    ----------
    make : str
        The Make to write.
    focal_length_mm : float or None
        The lens's focal length; None where the lens is the user's (then ``stacking.camera.focal_length_mm``).
    pixel_pitch_um : float
        Side of one sensor pixel, micrometres.
    largest_frame : tuple of int
        (width, height) px of the largest frame the driver delivers (libcamera's PixelArraySize): a file larger
        than this was scaled, or is not from this camera.
    """

    make: str
    focal_length_mm: float | None
    pixel_pitch_um: float
    largest_frame: tuple[int, int]


# Keyed by the EXIF Model OpenScan3 writes: libcamera's Model property, the kernel driver's sensor name.
# Raspberry Pi's figures: raspberrypi/documentation, documentation/asciidoc/accessories/camera/camera_hardware.adoc,
# "Hardware Specification" table (commit 0510938b).
_RASPBERRY_PI_CM3 = Camera("Raspberry Pi", 4.74, 1.4, (4608, 2592))  # Camera Module 3: 4.74 mm, 1.4 um, 4608x2592
_RASPBERRY_PI_CM3_WIDE = Camera("Raspberry Pi", 2.75, 1.4, (4608, 2592))  # Camera Module 3 Wide: 2.75 mm
CAMERAS: dict[str, Camera] = {
    # Arducam 64MP Hawkeye (B0399), Arducam's docs "64MP Hawkeye": active pixels 9152 x 6944, 0.8 um, FoV 72 deg
    # (H). Arducam publishes no focal length: derived from that FoV, f = (9152 * 0.8 um / 2) / tan(36 deg) =
    # 5.04 mm (third parties quote 5.1 mm, from an 84 deg diagonal FoV). The driver (arducam_64mp.c) exposes a
    # 9248 x 6944 pixel array, from which OpenScan3 computes its crops.
    "arducam_64mp": Camera("Arducam", 5.04, 0.8, (9248, 6944)),
    # Arducam IMX519 16MP (B0371): 4656 x 3496 at 1.22 um (libcamera's camera_sensor_properties.cpp unit cell).
    # No maker datasheet reachable: 4.28 mm is a third-party figure, consistent with Arducam's 80 deg diagonal
    # FoV, which gives (7.10 mm / 2) / tan(40 deg) = 4.23 mm.
    "imx519": Camera("Arducam", 4.28, 1.22, (4656, 3496)),
    # Raspberry Pi HQ Camera: 4056 x 3040 at 1.55 um; focal length "Depends on lens".
    "imx477": Camera("Raspberry Pi", None, 1.55, (4056, 3040)),
    # Camera Module 3 and its Wide and NoIR variants (same lenses; the _noir names are libcamera's IPA helpers'
    # names for them, cam_helper_imx708.cpp).
    "imx708": _RASPBERRY_PI_CM3,
    "imx708_noir": _RASPBERRY_PI_CM3,
    "imx708_wide": _RASPBERRY_PI_CM3_WIDE,
    "imx708_wide_noir": _RASPBERRY_PI_CM3_WIDE,
}


def focal_length_35mm(focal_length_mm: float, size: tuple[int, int], pixel_pitch_um: float) -> int:
    """35 mm equivalent focal length of an image of ``size`` (width, height) px at ``pixel_pitch_um``.

    The imaged area is the image's own (a crop of the sensor has a longer equivalent focal length than the whole
    sensor), compared diagonal to diagonal with 36 x 24 mm. Rounded to whole mm, as the EXIF SHORT holds it.
    """
    diagonal_mm = math.hypot(*size) * pixel_pitch_um / 1000.0
    return max(1, min(65535, round(focal_length_mm * FULL_FRAME_DIAGONAL_MM / diagonal_mm)))


def fill_camera_exif(exif: bytes | None, size: tuple[int, int],
                     settings: CameraSettings) -> tuple[bytes | None, dict]:
    """Add the camera data the reference frame's EXIF lacks, from :data:`CAMERAS` and ``settings``.

    Parameters
    ----------
    exif : bytes or None
        The result's EXIF (TIFF-structured), or None.
    size : tuple of int
        (width, height) of the result, px.
    settings : CameraSettings

    Returns
    -------
    exif : bytes or None
        The EXIF to write: ``exif`` itself when nothing was added (off, no EXIF, unreadable EXIF, nothing known).
    record : dict
        ``model`` (the EXIF Model, or None), ``source`` ("table", "settings", "table and settings" or None),
        ``added`` (tag name -> value written), ``kept`` (tags we would have written that the camera wrote) and
        ``notes`` (why something was not added).
    """
    record: dict = {"model": None, "source": None, "added": {}, "kept": [], "notes": []}
    if not settings.fill_exif:
        record["notes"].append("off (stacking.camera.fill_exif = false)")
        return exif, record
    if exif is None:
        record["notes"].append("the reference frame has no EXIF to add to")
        return exif, record
    try:
        present = read_tags(exif)
    except ExifError as error:
        record["notes"].append(f"the reference frame's EXIF is unreadable: {error}")
        return exif, record
    model = present.get("Model") if isinstance(present.get("Model"), str) else None
    record["model"] = model
    known = CAMERAS.get(model) if model else None
    make = settings.make or (known.make if known else None)
    focal = settings.focal_length_mm or (known.focal_length_mm if known else None)
    pitch = settings.pixel_pitch_um
    if pitch is None and known is not None:
        largest = max(known.largest_frame), min(known.largest_frame)
        if max(size) <= largest[0] and min(size) <= largest[1]:
            pitch = known.pixel_pitch_um
        else:
            record["notes"].append(
                f"{size[0]}x{size[1]} px is larger than the {model}'s sensor ({largest[0]}x{largest[1]}): scaled, "
                "or not that camera; set stacking.camera.pixel_pitch_um for the 35 mm and focal plane values")
    record["source"] = _source(known, settings)
    if record["source"] is None:
        record["notes"].append(f"camera {model or '(no Model)'} is not in the table and stacking.camera sets "
                               "nothing: nothing added")
        return exif, record
    if known is not None and focal is None:
        record["notes"].append(f"the {model}'s lens is the user's: set stacking.camera.focal_length_mm")
    wanted = _wanted(present, size, make, focal, pitch)
    record["kept"] = [name for name in wanted if name in present]
    if any(name in present for name in _FOCAL_PLANE):
        # The three go together or not at all: a unit added beside a camera's own X/Y resolution would change
        # what they mean (EXIF's default unit is the inch).
        wanted = {name: value for name, value in wanted.items() if name not in _FOCAL_PLANE}
    try:
        exif, added = add_tags(exif, wanted)
    except ExifError as error:
        record["notes"].append(f"nothing added: {error}")
        return exif, record
    record["added"] = {name: _plain(wanted[name]) for name in added}
    return exif, record


def _wanted(present: dict, size: tuple[int, int], make: str | None, focal: float | None,
            pitch: float | None) -> dict[str, Value]:
    """The tags these figures give, whether or not the frame has them; the 35 mm value from the camera's own
    focal length where it wrote one, so that the two agree."""
    wanted: dict[str, Value] = {}
    if make:
        wanted["Make"] = make
    if focal:
        wanted["FocalLength"] = _rational(focal)
    camera_focal = present.get("FocalLength")
    if isinstance(camera_focal, float) and camera_focal > 0:
        focal = camera_focal
    if focal and pitch:
        wanted["FocalLengthIn35mmFilm"] = focal_length_35mm(focal, size, pitch)
    if pitch:
        per_cm = _rational(10_000 / pitch)
        wanted.update(dict(zip(_FOCAL_PLANE, (per_cm, per_cm, _CM))))
    return wanted


def _source(known: Camera | None, settings: CameraSettings) -> str | None:
    by_settings = any(value is not None for value in (settings.make, settings.focal_length_mm,
                                                      settings.pixel_pitch_um))
    if known is not None:
        return "table and settings" if by_settings else "table"
    return "settings" if by_settings else None


def _rational(value: float) -> Fraction:
    """``value`` as a RATIONAL whose numerator and denominator fit 32 bits (to 1 part in 10^5 or better)."""
    return Fraction(value).limit_denominator(100_000 if value < 40_000 else 1)


def _plain(value: Value) -> str | int | float:
    return round(float(value), 4) if isinstance(value, Fraction) else value
