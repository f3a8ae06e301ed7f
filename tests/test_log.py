"""The log (watcher.log): JSON lines a strict UTF-8 reader takes, whatever the file names in them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# A real process configured as the daemon configures itself, logging what the daemon logs about odd files.
_SCRIPT = """
import logging, os, sys
from pathlib import Path
import structlog
from watcher.config import LoggingSettings
from watcher.log import configure_logging

configure_logging(LoggingSettings(), Path(sys.argv[1]))
log = structlog.get_logger("focus-watcher")
name = os.fsdecode(b"caf\\xe9_f1.jpg")
log.warning("file.unplaced", scan=os.fsdecode(b"r\\xe9sultats"), file=name, reason=f"unsafe stack name {name!r}")
log.info("result.missing", stack="caf\\udce9/pos", outputs=["caf\\udce9/pos.jpg"], path=Path("/x") / name)
logging.getLogger("watchdog.observers").warning("cannot watch /hot/%s", name)
"""


def test_a_line_about_an_undecodable_name_is_valid_utf8_json(tmp_path):
    log_file = tmp_path / "focus-watcher.log"
    done = subprocess.run([sys.executable, "-c", _SCRIPT, str(log_file)], cwd=REPO, capture_output=True,
                          timeout=60, check=True)
    for output in (log_file.read_bytes(), done.stderr):  # the file, and stderr as journald takes it
        lines = output.decode("utf-8").splitlines()  # strict
        events = [json.loads(line) for line in lines]
        assert [e["event"] for e in events] == ["file.unplaced", "result.missing", "cannot watch /hot/caf\\xe9_f1.jpg"]
        for event in events:
            json.dumps(event, ensure_ascii=False).encode("utf-8")  # no lone surrogate in any string
        unplaced, missing, _watchdog = events
        assert (unplaced["scan"], unplaced["file"]) == ("r\\xe9sultats", "caf\\xe9_f1.jpg")
        assert (missing["stack"], missing["outputs"]) == ("caf\\xe9/pos", ["caf\\xe9/pos.jpg"])
