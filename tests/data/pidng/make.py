"""Write the DNGs in this folder with PiDNG itself, as Picamera2 calls it (``PICAM2DNG(Picamera2Camera(...))``).

    python tests/data/pidng/make.py LABEL PIDNG_SRC

LABEL names the files (``pidng-LABEL-<bits>bit.dng``); PIDNG_SRC is a PiDNG checkout's ``src`` folder (or "" for the
installed PiDNG). The scene is benchmarks.picamera_dng.patch_scene() through benchmarks.picamera_dng's synthetic
camera (white balance R 1.9, B 1.6; its CCM), mosaicked RGGB.
"""

import sys
from pathlib import Path

label, source = sys.argv[1], sys.argv[2]
if source:
    sys.path.insert(0, source)
sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from pidng.camdefs import Picamera2Camera  # noqa: E402 - from the checkout given
from pidng.core import PICAM2DNG  # noqa: E402

from benchmarks.picamera_dng import SyntheticCamera, mosaic, patch_scene  # noqa: E402

scene, _colours = patch_scene()
for bits, black in ((10, 64), (12, 256), (16, 4096)):
    camera = SyntheticCamera(bits=bits, black=black)
    cfa = mosaic(scene, camera)
    fmt = {"size": (cfa.shape[1], cfa.shape[0]), "format": f"SRGGB{bits}", "stride": cfa.shape[1] * 2}
    metadata = {"SensorBlackLevels": [black << (16 - bits)] * 4, "ColourGains": camera.gains,
                "ColourCorrectionMatrix": tuple(camera.ccm.flatten()), "ExposureTime": camera.exposure_us,
                "AnalogueGain": 1.0, "DigitalGain": 1.0, "SensorTimestamp": 123456789}
    writer = PICAM2DNG(Picamera2Camera(fmt, metadata))
    writer.options(compress=False)
    Path(__file__).with_name(f"pidng-{label}-{bits}bit.dng").write_bytes(bytes(writer.convert(cfa.copy())))
