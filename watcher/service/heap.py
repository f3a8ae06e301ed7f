"""Giving the C heap's free memory back to the system, so that the daemon's RSS follows what it keeps.

The daemon frees as much as it allocates, night after night, but glibc's allocator keeps freed memory for reuse
and returns it to the system only from the top of its heap: with 20 000 kept frames its RSS crept up by about
2 MiB over 30 nights, in steps, while no structure grew (docs/benchmarks.md, the daemon's main loop).
``malloc_trim`` returns the free pages wherever they lie.
"""

from __future__ import annotations

import ctypes

_MALLOC_TRIM = getattr(ctypes.CDLL(None), "malloc_trim", None)  # None with a C library that has none (musl)


def return_free_memory() -> bool:
    """Return the C heap's free pages to the system; False where the C library cannot.

    It walks the free heap: tens of ms for a heap of a few hundred MiB (the 2-core CI machine), so call it when
    idle, not on every pass.
    """
    if _MALLOC_TRIM is None:
        return False
    _MALLOC_TRIM(0)
    return True
