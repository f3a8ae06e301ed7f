"""Shared fixtures: the team's real focus stacks, vendored under tests/data/ (see each folder's SOURCE.md).

They are part of the repository so that a fresh clone runs every test; a missing file is a failure, never a skip.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import cv2
import pytest

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "tests" / "data"


if os.environ.get("PYTEST_XDIST_WORKER"):
    # The test processes run side by side and already use every core: OpenCV's own threads would only contend
    # with them (its idle threads spin before they sleep). Results do not depend on the thread count (tested).
    cv2.setNumThreads(1)


_ORIENTATION_ENTRY = b"\x12\x01\x03\x00\x01\x00\x00\x00"  # little-endian EXIF: tag 0x0112, SHORT, count 1


def camera_orientation(jpeg: bytes) -> int | None:
    """The EXIF Orientation a (little-endian EXIF) JPEG's first IFD holds, read here without the project's code."""
    at = jpeg.find(_ORIENTATION_ENTRY, 0, 1 << 16)
    return None if at < 0 else int.from_bytes(jpeg[at + 8:at + 10], "little")


def with_camera_orientation(jpeg: bytes, orientation: int) -> bytes:
    """A real camera JPEG (its EXIF little-endian, with an Orientation tag) with that tag set to ``orientation``,
    the way the camera marks a shot taken turned; the pixels are untouched."""
    at = jpeg.find(_ORIENTATION_ENTRY, 0, 1 << 16)
    assert at > 0, "no little-endian Orientation tag in this JPEG's EXIF"
    return jpeg[:at + 8] + orientation.to_bytes(2, "little") + jpeg[at + 10:]


def with_orientation(jpeg: bytes, orientation: int) -> bytes:
    """Insert an EXIF APP1 segment holding only Orientation (the way cameras tag portrait shots)."""
    tiff = b"II*\x00" + struct.pack("<IH", 8, 1) + struct.pack("<HHII", 0x0112, 3, 1, orientation) + b"\0\0\0\0"
    app1 = b"\xff\xe1" + struct.pack(">H", len(tiff) + 8) + b"Exif\x00\x00" + tiff
    return jpeg[:2] + app1 + jpeg[2:]


def vendored(folder: str, pattern: str, count: int) -> list[Path]:
    """The ``count`` files matching ``pattern`` in ``tests/data/<folder>``, sorted; fails the test otherwise."""
    frames = sorted((DATA / folder).glob(pattern))
    if len(frames) != count:
        pytest.fail(f"tests/data/{folder}: expected {count} files {pattern}, found {len(frames)} -- the vendored "
                    "test data is incomplete (restore it from git)", pytrace=False)
    return frames


@pytest.fixture(scope="session")
def pcb_stack() -> list[Path]:
    """7 real 2048x1536 JPEG frames of a PCB (MIT, PetteriAimonen/focus-stack), with EXIF."""
    return vendored("focusstack_pcb", "pcb_*.jpg", 7)


@pytest.fixture(scope="session")
def ring_stack() -> list[Path]:
    """6 real 1521x1141 JPEG frames of a ring on white (Apache-2.0, cmcguinness/focusstack)."""
    return vendored("cmcguinness_steps", "step*.jpg", 6)


def pytest_xdist_auto_num_workers(config) -> int:
    """``-n auto``: three test processes per core, at most 8. Much of the suite's time is spent waiting on real
    daemons (settle and quiet periods, process starts, a Dask worker coming back), which more processes than
    cores fill (2 cores: 5:17 with 2 processes, 4:02 with 4 at 1e62b3a; 3:43 with 4, 3:19 with 6 at 506c526).
    Beyond 8, the longest chains (the Dask tests, the fault night: a minute or two each) bound the run anyway, and
    each process only adds an interpreter."""
    return min(8, 3 * len(os.sched_getaffinity(0)))


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist's own, which reads the groups
def pytest_collection_modifyitems(config, items) -> None:
    """Markers by where a test lives (``-m "not cluster"``, ...); the Dask cluster tests run in one process of
    pytest-xdist, which starts one shared cluster for them (tests/e2e/cluster/conftest.py). The fault night and the
    cluster tests, long in wall time but mostly waiting, are handed out first, so that the rest fills in beside
    them instead of the run ending on one of them alone. The tests of a module that share a module-scoped fixture
    (a set of stacks fused once, then checked many ways) run in one process too, so that it is made once; so do
    the report's tests, around their one session-scoped stack."""
    items.sort(key=lambda item: 0 if item.path.name == "test_soak.py" or "cluster" in item.path.parts else 1)
    for item in items:
        parts = Path(item.path).relative_to(REPO / "tests").parts
        if parts[0] == "e2e" or item.path.name == "test_soak.py":
            item.add_marker(pytest.mark.e2e)
        if parts[:2] == ("e2e", "cluster"):
            item.add_marker(pytest.mark.cluster)
            item.add_marker(pytest.mark.xdist_group("cluster"))
        elif "fused" in item.fixturenames:  # the report's tests share a stack fused at full size (tests/report/)
            item.add_marker(pytest.mark.xdist_group("the fused PCB stack"))
        elif any(defs[-1].scope == "module" for defs in item._fixtureinfo.name2fixturedefs.values()):
            item.add_marker(pytest.mark.xdist_group(f"module {'/'.join(parts)}"))
        if item.path.name == "test_browser.py":
            item.add_marker(pytest.mark.browser)
