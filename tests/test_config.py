"""Settings: sources and their priority, the example file, and errors that name the key."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from pydantic import BaseModel

from watcher.config import ConfigError, Settings, load_settings

EXAMPLE = Path(__file__).resolve().parents[1] / "config.example.toml"


def test_example_config_loads_and_states_the_real_defaults():
    example = load_settings(EXAMPLE)
    assert example.model_dump() == Settings().model_dump()


def test_example_config_documents_every_key():
    text = EXAMPLE.read_text()

    def check(model, data: dict, where: str) -> None:
        for key in type(model).model_fields:
            value = getattr(model, key)
            if isinstance(value, BaseModel):  # a section, or a table within one ([stacking.camera])
                assert key in data, f"[{where}{key}] undocumented"
                check(value, data[key], f"{where}{key}.")
            else:
                assert key in data or f"# {key} =" in text, f"{where}{key} undocumented"

    check(Settings(), tomllib.loads(text), "")


def test_priority_file_then_environment_then_flags(tmp_path, monkeypatch):
    config = tmp_path / "c.toml"
    config.write_text('[stacking]\nblend = "weighted"\nfocus_window = 9\nsharpen = 0.5\n')
    monkeypatch.setenv("FOCUS_WATCHER_STACKING__FOCUS_WINDOW", "11")
    monkeypatch.setenv("FOCUS_WATCHER_STACKING__SHARPEN", "1.0")
    settings = load_settings(config, {"stacking": {"sharpen": 2.0}})
    assert settings.stacking.blend == "weighted"  # file
    assert settings.stacking.focus_window == 11  # environment beats file
    assert settings.stacking.sharpen == 2.0  # flags beat environment


@pytest.mark.parametrize(("toml", "message"), [
    ('[stacking]\nfocus_window = 8\n', "stacking.focus_window: must be odd (got 8)"),
    ('[stacking]\ncolour = 1\n', "stacking.colour: unknown key"),
    ('[naming]\nmode = "fixed"\n', "naming: mode 'fixed' needs naming.stack_size"),
    ('[naming]\nmode = "regex"\npattern = "(?P<stack>a)"\n', "naming.pattern: needs the named groups ['frame']"),
    ('hot_folder = "x"\nresults_folder = "x/results"\n', "results_folder must not be inside hot_folder"),
    ('[workers]\ncount = 0\n', "workers.count: Input should be greater than or equal to 1"),
    ('[workers]\nexecutor = "dask"\n', 'workers: executor "dask" needs workers.dask_scheduler'),
    ('[workers.dask_path_map]\n"srv" = "/mnt"\n', "workers.dask_path_map: prefixes must be absolute paths"),
    ('[stacking\n', "c.toml"),
])
def test_bad_settings_fail_naming_the_key(tmp_path, toml, message):
    config = tmp_path / "c.toml"
    config.write_text(toml)
    with pytest.raises(ConfigError) as error:
        load_settings(config)
    assert message in str(error.value)


def test_missing_config_file_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_settings(tmp_path / "nope.toml")


def test_the_alignments_gradient_share_still_loads_under_its_first_name(tmp_path, monkeypatch):
    config = tmp_path / "c.toml"
    config.write_text("[stacking]\nmask_threshold = 30\n")  # it read like a setting of the object mask
    assert load_settings(config).stacking.align_gradient_percent == 30
    monkeypatch.setenv("FOCUS_WATCHER_STACKING__MASK_THRESHOLD", "20")
    assert load_settings(None).stacking.align_gradient_percent == 20
    assert load_settings(config, {"stacking": {"align_gradient_percent": 40}}).stacking.align_gradient_percent == 40


def test_camera_data_settings_from_file_and_environment_and_a_bad_make_named(tmp_path, monkeypatch):
    config = tmp_path / "c.toml"
    config.write_text('[stacking.camera]\nfocal_length_mm = 16.0\nmake = "Raspberry Pi"\n')
    monkeypatch.setenv("FOCUS_WATCHER_STACKING__CAMERA__FILL_EXIF", "false")
    camera = load_settings(config).stacking.camera
    assert (camera.focal_length_mm, camera.make, camera.fill_exif, camera.pixel_pitch_um) == (
        16.0, "Raspberry Pi", False, None)
    with pytest.raises(ConfigError, match=r"stacking\.camera\.make"):
        load_settings(None, {"stacking": {"camera": {"make": "Caméra"}}})
