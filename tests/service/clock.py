"""A clock the test steps by hand (``clock.now += 5``): the tracker and the daemon take it in place of
``time.monotonic``, so completeness and backoff are tested without sleeping."""

from __future__ import annotations


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now
