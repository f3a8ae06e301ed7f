"""Each mesher's naming of the object mask (watcher/masks.py), in both results layouts, and the templates
refused at start."""

from __future__ import annotations

from pathlib import Path

import pytest

from watcher.config import ConfigError, StackingSettings, load_settings
from watcher.masks import LAYOUTS, mask_paths
from watcher.service.executor import JobSpec
from watcher.service.naming import StackId
from watcher.service.placement import Placement

MIRROR_IMAGE = ("owl", "scan01", "scan01_007.jpg")
OPENSCAN_IMAGE = ("owl", "scan01", "stacked", "stacked_scan01_007.jpg")


@pytest.mark.parametrize(("entry", "mirror", "openscan"), [
    ("colmap", "masks/owl/scan01/scan01_007.jpg.png", "owl/scan01/masks/stacked_scan01_007.jpg.png"),
    ("meshroom", "owl/scan01/masks/scan01_007.png", "owl/scan01/masks/stacked_scan01_007.png"),
    ("realitycapture", "owl/scan01/scan01_007.jpg.mask.png", "owl/scan01/masks/stacked_scan01_007.jpg.mask.png"),
    ("metashape", "owl/scan01/masks/scan01_007_mask.png", "owl/scan01/masks/stacked_scan01_007_mask.png"),
    ("openmvs", "owl/scan01/masks/scan01_007.mask.png", "owl/scan01/masks/stacked_scan01_007.mask.png"),
    ("{scan}/masks/{name}-{stem}.png", "owl/scan01/masks/scan01_007.jpg-scan01_007.png",
     "owl/scan01/masks/stacked_scan01_007.jpg-stacked_scan01_007.png"),
    ("{folder}/x/{stem}.png", "owl/scan01/x/scan01_007.png", "owl/scan01/stacked/x/stacked_scan01_007.png"),
])
def test_each_layout_names_the_mask_of_a_result_its_own_way(entry, mirror, openscan):
    assert mask_paths((entry,), "mirror", ("owl", "scan01"), MIRROR_IMAGE) == [mirror]
    assert mask_paths((entry,), "openscan", ("owl", "scan01"), OPENSCAN_IMAGE) == [openscan]


def test_every_layout_is_named_in_both_results_layouts():
    assert set(LAYOUTS["mirror"]) == set(LAYOUTS["openscan"])
    assert all(template.startswith("{scan}/masks/") for template in LAYOUTS["openscan"].values())


def test_a_scan_at_the_top_and_a_name_given_twice_give_one_clean_path_each():
    paths = mask_paths(("colmap", "meshroom", "{scan}/masks/{stem}.png"), "mirror", (), ("a.jpg",))
    assert paths == ["masks/a.jpg.png", "masks/a.png"]


def test_the_placement_gives_each_stack_its_masks_below_the_results_folder(tmp_path):
    placement = Placement(tmp_path, "openscan", "jpg", ("colmap", "openmvs"))
    paths = placement.prepare(StackId("owl/scan01", "scan01_007"))
    folder = tmp_path / "owl" / "scan01" / "masks"
    assert paths.masks == (folder / "stacked_scan01_007.jpg.png", folder / "stacked_scan01_007.mask.png")
    assert folder.is_dir() and paths.image == tmp_path / "owl/scan01/stacked/stacked_scan01_007.jpg"
    assert Placement(tmp_path, "mirror", "jpg").paths(StackId("a", "b")).masks == ()


@pytest.mark.parametrize(("masks", "layout", "message"), [
    (["../{stem}.png"], "mirror", "it leaves the results folder (for project/scan01/scan01_007.jpg: ../"),
    (["{scan}/../../../{name}.png"], "mirror", "it leaves the results folder"),
    (["/srv/masks/{stem}.png"], "mirror", "it is absolute"),
    (["colmp"], "mirror", "'colmp' is not a mask layout (colmap, meshroom, realitycapture, metashape, openmvs)"),
    (["{scan}/mask.png"], "mirror", "every stack's mask would be the same file"),
    (["{scan}/{stem}.jpg"], "mirror", "the template must end in .png"),
    (["{scan}/{image}.png"], "mirror", "placeholders are {scan}, {folder}, {name}, {stem}"),
    (["{stem:>9}.png"], "mirror", "without format specs"),
    (["{scan}/{stem.png"], "mirror", "a literal brace is written"),
    (["{folder}/{stem}.depth.png"], "mirror", "one of the stack's other outputs"),
    (["{scan}/{stem}.png"], "openscan", "masks must stay in the scan's masks folder"),
    (["{folder}/{stem}.png"], "openscan", "start the template with {scan}/masks/"),
])
def test_a_mask_template_that_cannot_work_is_refused_at_start_saying_why(tmp_path, masks, layout, message):
    config = tmp_path / "c.toml"
    config.write_text(f'[results]\nlayout = "{layout}"\nmasks = {masks!r}\n'.replace("'", '"'))
    with pytest.raises(ConfigError) as error:
        load_settings(config)
    assert "results.masks: " in str(error.value) and message in str(error.value)


def test_a_mask_template_of_the_results_own_format_is_refused_only_when_it_would_overwrite_the_result(tmp_path):
    beside = {"results": {"masks": ["{folder}/{stem}.png"]}}
    assert load_settings(overrides=beside).results.masks == ("{folder}/{stem}.png",)  # beside a JPEG: fine
    with pytest.raises(ConfigError, match="one of the stack's other outputs"):
        load_settings(overrides={**beside, "stacking": {"output_format": "png"}})


def test_masks_are_off_by_default_and_a_list_of_layouts_loads():
    assert load_settings().results.masks == ()
    settings = load_settings(overrides={"results": {"masks": ["colmap", "meshroom"], "layout": "openscan"},
                                        "hot_folder": Path("h"), "results_folder": Path("h")})
    assert settings.results.masks == ("colmap", "meshroom")


def test_a_cluster_job_writes_every_mask_in_its_scratch_folder_and_hands_each_back_by_kind(tmp_path):
    spec = JobSpec(stack="a/b", sources=(), image=tmp_path / "b.jpg", depthmap=None, settings=StackingSettings(),
                   memory_limit_bytes=1, threads=1, daemon_pid=1, masks=(tmp_path / "m/b.jpg.png", tmp_path / "b.png"))
    local = spec.relocated(Path("/scratch"))
    assert local.image == Path("/scratch/image.jpg") and local.depthmap is None
    assert local.masks == (Path("/scratch/mask0.png"), Path("/scratch/mask1.png"))
    assert list(local.outputs()) == list(spec.outputs()) == ["image", "mask0", "mask1"]
