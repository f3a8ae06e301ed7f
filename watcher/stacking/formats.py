"""The formats results are written in, by name and by file suffix: the one home of that map, importable without
numpy or OpenCV (the daemon and the command line name files; only the stacking workers encode pixels)."""

from __future__ import annotations

FORMATS = {"jpg": ".jpg", "png": ".png", "tif": ".tif"}  # output format -> the suffix its files get
SUFFIXES = {".jpg": "jpg", ".jpeg": "jpg", ".png": "png", ".tif": "tif", ".tiff": "tif"}  # suffix -> format
