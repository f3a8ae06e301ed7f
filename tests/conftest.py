"""Shared fixtures: the team's real focus stacks (beside the repo, in ../shared/data/real)."""

from __future__ import annotations

from pathlib import Path

import pytest

REAL_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "real"


@pytest.fixture(scope="session")
def pcb_stack() -> list[Path]:
    """7 real 2048x1536 JPEG frames of a PCB (MIT, PetteriAimonen/focus-stack), with EXIF."""
    frames = sorted((REAL_DATA / "focusstack_pcb").glob("pcb_*.jpg"))
    if len(frames) != 7:
        pytest.skip(f"real PCB stack not found under {REAL_DATA}")
    return frames


@pytest.fixture(scope="session")
def ring_stack() -> list[Path]:
    """6 real 1521x1141 JPEG frames of a ring on white (Apache-2.0, cmcguinness/focusstack)."""
    frames = sorted((REAL_DATA / "cmcguinness_steps").glob("step*.jpg"))
    if len(frames) != 6:
        pytest.skip(f"real ring stack not found under {REAL_DATA}")
    return frames
