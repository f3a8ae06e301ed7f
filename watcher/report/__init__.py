"""The morning report: static HTML pages of a results folder, drawn from its JSON records.

``index.html`` at the top lists every scan (failures first); ``report/<scan>/index.html`` shows a scan's
positions as a grid of thumbnails, with its focus-range advice; ``report/<scan>/<stack>.html`` shows one stack.
Plain HTML with inline CSS and SVG, relative links only, no script: it reads from a Samba share, a USB stick or
a phone. :class:`Report` keeps it up to date incrementally (see :mod:`watcher.report.build`).
"""

from watcher.report.build import PendingStack, RefreshStats, Report

__all__ = ["PendingStack", "RefreshStats", "Report"]
