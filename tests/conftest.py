"""Shared fixtures: the team's real focus stacks, vendored under tests/data/ (see each folder's SOURCE.md).

They are part of the repository so that a fresh clone runs every test; a missing file is a failure, never a skip.
"""

from __future__ import annotations

from pathlib import Path

import pytest

DATA = Path(__file__).resolve().parent / "data"


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
