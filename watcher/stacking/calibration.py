"""Calibrate once per scan: the transforms of a rig's focus steps, reused for the next stacks of the same scan.

At every position of a scan the lens steps through the same focus positions, so focus breathing -- the transform
from one focus step to the next -- repeats from stack to stack (OpenScan3's own stacker calibrates once per scan
for this reason). A stack measured in full hands its transforms on as a :class:`Calibration`; the next stacks of
the scan check each step cheaply against their own frames (:func:`~watcher.stacking.align.check_step`) and use it
when it holds, or estimate that frame anew when it does not (the rig was bumped, the focus range changed). Each
record says which transforms it used and how well they checked. Low-detail positions (an object's plain side)
are placed better this way than by aligning them alone.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

# A calibrated step holds when ECC, started there, moves it less than this (px of the alignment images, worst
# corner): above the check's own noise (0.1-0.3 px), below a bump or a focus step changed by a third (~1 px).
CHECK_TOLERANCE_PX = 0.5


@dataclass(frozen=True)
class Calibration:
    """Transforms (reference -> frame, full-resolution px) of every focus step of a stack.

    Attributes
    ----------
    shape : (H, W)
        The frames' size.
    reference : int
        The reference frame's index.
    warps : tuple of ndarray (3, 3)
        Per frame index.
    source : str
        Which stack measured them (for the records that reuse them).
    """

    shape: tuple[int, int]
    reference: int
    warps: tuple[np.ndarray, ...]
    source: str

    def fits(self, shape: tuple[int, int], count: int, reference: int) -> bool:
        """Whether it applies to a stack of ``count`` frames of ``shape`` with this reference."""
        return tuple(shape) == tuple(self.shape) and count == len(self.warps) and reference == self.reference

    def step(self, index: int, neighbour: int) -> np.ndarray:
        """Neighbour -> frame ``index`` transform (full-resolution px)."""
        return self.warps[index] @ np.linalg.inv(self.warps[neighbour])

    @classmethod
    def from_record(cls, record: Mapping, source: str) -> Calibration | None:
        """The calibration a stack's record carries, or None when it has no usable transforms (failed, unaligned,
        or made without alignment)."""
        frames: Sequence[Mapping] = record.get("frames") or ()
        reference = (record.get("reference") or {}).get("index")
        if not frames or reference is None or record.get("width") is None or record.get("height") is None:
            return None
        if any(frame.get("placement") in (None, "unaligned") for frame in frames):
            return None
        try:
            warps = tuple(np.asarray(frame["transform"], np.float64).reshape(3, 3) for frame in frames)
        except (KeyError, TypeError, ValueError):
            return None
        return cls((int(record["height"]), int(record["width"])), int(reference), warps, source)
