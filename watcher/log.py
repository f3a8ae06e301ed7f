"""Structured logging: JSON lines to a size-rotated file in the results folder, and to stderr.

stderr gets a readable console rendering on a terminal and JSON lines otherwise (journald, pipes). Every line has
a stable ``event`` name (``stack.done``, ``stack.retry``, ...) and, for a stack, its ``stack`` id, so
``grep '"stack": "scan01/scan01_129"' focus-watcher.log`` shows one stack's whole life. watchdog's own debug
chatter (one line per inotify event) is kept out even at ``logging.level = "debug"``. Lines are ASCII (JSON
escapes) and every string in them is valid Unicode: names that are not UTF-8 are shown as
:func:`watcher.names.display` shows them.
"""

from __future__ import annotations

import logging
import logging.handlers
import sys
from pathlib import Path

import structlog

from watcher.config import LoggingSettings
from watcher.names import displayable

_SHARED = [
    structlog.contextvars.merge_contextvars,
    structlog.stdlib.add_log_level,
    structlog.processors.TimeStamper(fmt="iso", utc=False),
]


def configure_logging(settings: LoggingSettings, log_file: Path | None) -> None:
    """Send structlog events to stderr and, if given, to ``log_file`` (rotated at ``file_max_bytes``)."""
    handlers: list[logging.Handler] = []
    stderr = logging.StreamHandler(sys.stderr)
    console = sys.stderr.isatty()
    stderr.setFormatter(_formatter(structlog.dev.ConsoleRenderer(colors=False) if console else _json()))
    handlers.append(stderr)
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        # delay: opened at the first line, so a read-only or full results folder does not stop the daemon
        # from starting; lines that cannot be written are dropped (raiseExceptions below), stderr still has them.
        rotating = logging.handlers.RotatingFileHandler(
            log_file, maxBytes=settings.file_max_bytes, backupCount=settings.file_backups, encoding="utf-8",
            delay=True,
        )
        rotating.setFormatter(_formatter(_json()))
        handlers.append(rotating)
    root = logging.getLogger()
    for handler in root.handlers[:]:
        root.removeHandler(handler)
        handler.close()
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(settings.level.upper())
    logging.getLogger("watchdog").setLevel(max(root.level, logging.INFO))
    logging.raiseExceptions = False  # a log line that cannot be written must never take the daemon down
    structlog.configure(
        processors=[*_SHARED, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )


def _json() -> structlog.processors.JSONRenderer:
    return structlog.processors.JSONRenderer(sort_keys=False)


def _formatter(renderer) -> structlog.stdlib.ProcessorFormatter:
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=_SHARED,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, _valid_text, renderer],
    )


def _valid_text(_logger, _method: str, event: dict) -> dict:
    """Every string of the event as valid text: a file name that is not UTF-8 (``caf\\udce9``) is written as
    ``caf\\xe9``, never as a lone surrogate, which no UTF-8 reader of the log could take."""
    return displayable(event)
