"""The report in a real browser: headless Chromium loads the pages, which must render, with nothing broken.

Chromium is Debian's (``.ci/run`` installs it). Without it these tests are skipped, saying how to install it --
pip cannot bring a browser -- except under CI (``CI=true``), where they fail, so that CI cannot pass without
having looked. Screenshots are kept in the test's temp folder (pytest keeps the last three runs).
"""

from __future__ import annotations

import os

import cv2
import numpy as np
import pytest

from tests.report.browser import Chromium, find_chromium
from watcher.report import Report

PHONE = {"width": 390, "height": 844, "mobile": True, "scale": 2.0}


@pytest.fixture(scope="module")
def chromium():
    executable = find_chromium()
    if executable is None:
        message = "no Chromium for the report's browser tests: sudo apt-get install chromium (Debian's package)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{message}, as .ci/run does", pytrace=False)
        pytest.skip(message)
    with Chromium(executable) as browser:
        yield browser


def looks_rendered(png: bytes) -> tuple[float, float]:
    """(grey-level spread, share of the most common colour) of a screenshot."""
    image = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None and image.shape[0] > 100 and image.shape[1] > 100
    packed = (image[..., 0].astype(np.int32) << 16) | (image[..., 1].astype(np.int32) << 8) | image[..., 2]
    _colours, counts = np.unique(packed, return_counts=True)
    return float(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY).std()), float(counts.max() / counts.sum())


@pytest.mark.parametrize("page", ["index.html", ".focus-watcher/report/proj/scan01/index.html",
                                  ".focus-watcher/report/proj/scan01/scan01_011.html",
                                  ".focus-watcher/report/proj/scan01/scan01_007.html"])
def test_pages_render_in_a_real_browser_on_a_desktop_and_a_phone(chromium, night, page, tmp_path):
    Report(night.results).rebuild(night.pending)
    name = page.replace("/", "_").removesuffix(".html")
    for device, options in (("desktop", {}), ("phone", PHONE)):
        loaded = chromium.load(night.results / page, **options)
        (tmp_path / f"{name}-{device}.png").write_bytes(loaded.screenshot)
        assert loaded.problems == [], (device, loaded.problems)
        spread, flat = looks_rendered(loaded.screenshot)
        assert spread > 20 and flat < 0.9, (device, spread, flat)  # text, tiles and pictures, not a blank page
        if device == "phone":
            assert loaded.width <= PHONE["width"], f"{page} is {loaded.width} px wide on a phone: it scrolls sideways"


def test_a_broken_page_is_caught(chromium, tmp_path):
    # The checks above must be able to fail: a missing picture and a script error are reported.
    page = tmp_path / "broken.html"
    page.write_text('<!DOCTYPE html><html><body><img src="missing.png"><script>undefined_call()</script></body></html>')
    problems = chromium.load(page).problems
    assert any("ERR_FILE_NOT_FOUND" in p for p in problems) and any("undefined_call" in p for p in problems)
