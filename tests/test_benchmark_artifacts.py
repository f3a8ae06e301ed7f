"""The artifact benchmark command (benchmarks/artifacts.py) end to end, on one small synthetic case."""

from __future__ import annotations

import math

import benchmarks.artifacts as artifacts


def test_the_command_scores_and_prints_every_image(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(artifacts, "OUT", tmp_path)  # renders are cached here, not in the checkout
    rows = artifacts.main(["--real", "", "--cases", "strokes", "--size", "320x240", "--no-focus-stack",
                           "--set", "blend=weighted"])
    printed = capsys.readouterr().out
    labels = [row["image"] for row in rows]
    assert labels[:2] == ["ours", "camera oracle"] and labels[3] == "frame in focus per tile", labels
    assert labels[2].startswith("sharpest frame (")
    ours = rows[0]
    assert ours["unaligned"] == "0/7" and 0.0 < ours["align"] < 50.0  # px, largest corner error
    assert 15.0 < ours["psnr"] < 40.0 and 0.3 < ours["ssim"] < 1.0
    assert all(math.isfinite(ours[key]) for key in ("band", "halo", "hollow", "detail"))
    assert rows[3]["halo"] == 0.0  # the baseline adds nothing to itself
    for label in labels:
        assert f"strokes              {label}" in printed
    assert list(tmp_path.glob("cases/strokes-320x240-uint8-*/case.pickle"))
