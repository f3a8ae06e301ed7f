"""One typed settings model for focus-watcher.

Sources, lowest priority first: built-in defaults, a TOML file (``--config``), environment variables
``FOCUS_WATCHER_<SECTION>__<KEY>`` (e.g. ``FOCUS_WATCHER_STACKING__BLEND=direct_map``), then command-line flags.
Unknown keys and bad values fail at start with a message naming the key (:class:`ConfigError`).
No other module reads the environment or the TOML file: settings flow down as typed objects.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, TomlConfigSettingsSource

from watcher.masks import check_entries
from watcher.stacking.probe import RAW_SUFFIXES

ENV_PREFIX = "FOCUS_WATCHER_"

BlendMethod = Literal["weighted", "guided_weighted", "direct_map", "laplacian_pyramid", "luma_weighted_chroma_pick"]
FocusMeasure = Literal["laplacian_var", "tenengrad", "sml"]


class ConfigError(ValueError):
    """Invalid settings; the message names every offending key."""


def default_memory_budget_mb() -> int:
    """70% of the memory this machine (or its cgroup, where one limits us) has, in MiB."""
    total = _physical_memory_bytes()
    limit = _cgroup_memory_limit_bytes()
    if limit is not None:
        total = min(total, limit)
    return max(64, int(total * 0.7) // (1 << 20))


def _physical_memory_bytes() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def _cgroup_memory_limit_bytes() -> int | None:
    """The tightest memory.max/memory.high of our cgroup v2 (e.g. systemd's MemoryMax=), None if unlimited."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    group = next((line[3:] for line in lines if line.startswith("0::")), None)
    if group is None:
        return None
    limits = []
    for name in ("memory.max", "memory.high"):
        try:
            text = (Path("/sys/fs/cgroup") / group.lstrip("/") / name).read_text().strip()
        except OSError:
            continue
        if text.isdigit():
            limits.append(int(text))
    return min(limits) if limits else None


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CameraSettings(_Section):
    """Camera data added to a result whose reference frame lacks it, for photogrammetry tools; see
    docs/camera-data.md. The cameras OpenScan rigs use are known by their EXIF Model; these settings are for
    any other camera and for what the table cannot know, and win over it."""

    fill_exif: bool = Field(
        True, description="Add Make, FocalLength, FocalLengthIn35mmFilm and FocalPlane*Resolution where the "
        "reference frame's EXIF lacks them (a tag the camera wrote is never changed)."
    )
    make: str | None = Field(None, min_length=1, max_length=64,
                             description="Make to write (printable ASCII), e.g. for a camera the table lacks.")
    focal_length_mm: float | None = Field(
        None, ge=0.1, le=2000, description="The lens's focal length: needed for the HQ Camera (imx477) and any "
        "camera the table lacks."
    )
    pixel_pitch_um: float | None = Field(
        None, ge=0.1, le=100, description="Size of one pixel of the frames in micrometres (the sensor's pitch, "
        "times the binning or scaling if frames are not taken pixel for pixel)."
    )

    @field_validator("make")
    @classmethod
    def _ascii(cls, value: str | None) -> str | None:
        if value is not None and not (value.isascii() and value.isprintable()):
            raise ValueError(f"must be printable ASCII, as EXIF's Make is (got {value!r})")
        return value


class StackingSettings(_Section):
    """How one stack is fused. Mirrors the seed tool's parameters, with measured defaults."""

    align: bool = Field(True, description="Align frames; turn off only for rigs whose camera and focus never move.")
    pyramid_levels: int = Field(4, ge=1, le=6, description="ECC pyramid levels (coarse to fine).")
    align_gradient_percent: float = Field(
        50.0, ge=1, le=100, description="Percent of the reference's pixels, strongest gradients first, that "
        "alignment (ECC) uses."
    )
    reference: Literal["first", "middle"] = Field("middle", description="Frame whose geometry the output keeps.")
    align_max_side: int = Field(768, ge=256, le=8192, description="Alignment is estimated at this size (px).")
    reuse_alignment: Literal["scan", "never"] = Field(
        "scan",
        description="The daemon calibrates the focus steps once per scan and reuses them for the scan's next "
        "stacks, checking every frame (scan); or aligns every stack alone (never).",
    )
    focus_measure: FocusMeasure = "sml"
    focus_window: int = Field(5, ge=3, le=21, description="Focus-measure window (odd, px at focus resolution).")
    focus_scales: int = Field(
        3, ge=1, le=6, description="Octaves the focus measure looks at (1: the finest only); see the README."
    )
    focus_max_megapixels: float = Field(
        1.0, gt=0, le=100, description="The depth map is decided on copies of about this many megapixels."
    )
    blend: BlendMethod = "guided_weighted"
    sharpen: float = Field(0.0, ge=0, le=3, description="Unsharp-mask amount applied after blending.")
    output_format: Literal["jpg", "png", "tif"] = "jpg"
    output_depth: Literal["auto", "8", "16"] = Field(
        "auto", description="Bit depth of the result; auto keeps the inputs' depth (JPEG is always 8-bit)."
    )
    raw_output_format: Literal["tif", "png", "jpg"] = Field(
        "tif",
        description="Stacks of raw frames (DNG, camera raws) are written in this format, 16-bit for tif and png. "
        "With results.layout = openscan the JPEG is written anyway (the firmware reads only it) and a 16-bit "
        "tif or png goes beside it.",
    )
    jpeg_quality: int = Field(95, ge=1, le=100)
    depthmap: bool = Field(False, description="Also write the depth map (index of the sharpest frame).")
    max_megapixels: float = Field(
        120.0, gt=0, description="Frames larger than this are refused before decoding (decompression bombs)."
    )
    camera: CameraSettings = Field(default_factory=CameraSettings)

    @model_validator(mode="before")
    @classmethod
    def _renamed_keys(cls, data: Any) -> Any:
        # align_gradient_percent was first called mask_threshold, which reads like a setting of the object mask:
        # files and environments with the old name still load (where both names are set, the new one wins)
        if isinstance(data, dict) and "mask_threshold" in data:
            data = dict(data)
            data.setdefault("align_gradient_percent", data.pop("mask_threshold"))
        return data

    @field_validator("focus_window")
    @classmethod
    def _odd_window(cls, value: int) -> int:
        if value % 2 == 0:
            raise ValueError(f"must be odd (got {value})")
        return value


class NamingSettings(_Section):
    """How file names are grouped into stacks."""

    mode: Literal["auto", "fixed", "regex"] = "auto"
    stack_size: int | None = Field(
        None,
        ge=1,
        le=999,
        description="Frames per stack: required for mode=fixed; for auto/regex the expected count when the "
        "scan's scan.json does not give one.",
    )
    pattern: str | None = Field(
        None,
        description="mode=regex: matched (fullmatch) against the file name without extension; named groups "
        "'stack' and 'frame', optional 'scan'.",
    )
    extensions: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".tif", ".tiff", *RAW_SUFFIXES)

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is None:
            return value
        try:
            compiled = re.compile(value)
        except re.error as exc:
            raise ValueError(f"not a valid regular expression: {exc}") from None
        missing = {"stack", "frame"} - set(compiled.groupindex)
        if missing:
            raise ValueError(f"needs the named groups {sorted(missing)}")
        return value

    @field_validator("extensions")
    @classmethod
    def _lower_dotted(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(ext.lower() if ext.startswith(".") else "." + ext.lower() for ext in value)

    @model_validator(mode="after")
    def _mode_needs(self) -> NamingSettings:
        if self.mode == "fixed" and self.stack_size is None:
            raise ValueError("mode 'fixed' needs naming.stack_size")
        if self.mode == "regex" and self.pattern is None:
            raise ValueError("mode 'regex' needs naming.pattern")
        return self


class CompletenessSettings(_Section):
    """When a stack counts as ready (never on a half-written file)."""

    settle_seconds: float = Field(5.0, ge=0, description="A frame's size and mtime must be unchanged this long.")
    stack_timeout_seconds: float = Field(
        60.0, gt=0, description="A stack with no new frame for this long is complete, whatever its count."
    )


class WorkerSettings(_Section):
    """Where stacks run: the bounded pool of local stacking processes, or a Dask cluster."""

    executor: Literal["local", "dask"] = Field(
        "local", description='local: worker processes on this machine; dask: tasks on the Dask cluster at '
        'dask_scheduler (needs pip install "focus-watcher[dask]").'
    )
    dask_scheduler: str | None = Field(None, description='The cluster\'s scheduler, e.g. "tcp://server:8786".')
    dask_frames: Literal["path", "ship"] = Field(
        "path", description="path: workers read the frames from the share (see dask_path_map); ship: the daemon "
        "reads them and sends their bytes (for workers that cannot see the share)."
    )
    dask_path_map: dict[str, str] = Field(
        default_factory=dict, description="Path prefixes as the daemon sees them -> as the workers see them "
        '(dask_frames = "path"), e.g. {"/srv/scans" = "/mnt/nas/scans"}.'
    )
    dask_wait_for_worker_seconds: float = Field(
        300.0, gt=0, description="A stack that no connected worker has the memory for fails after waiting this "
        "long for one to join; once gives up (exit 1, nothing marked failed) when the scheduler was unreachable, or "
        "had no worker that takes stacks, for this long."
    )
    count: int = Field(default_factory=lambda: max(1, (os.cpu_count() or 1) - 1), ge=1, le=64)
    queue_size: int = Field(8, ge=1, le=10_000, description="Stacks waiting for a worker; intake pauses beyond it.")
    memory_budget_mb: int = Field(
        default_factory=default_memory_budget_mb,
        ge=64,
        description="Sum of the estimated peaks of running stacks stays under this (default: 70% of RAM).",
    )
    stack_timeout_seconds: float = Field(1800.0, gt=0, description="A stack running longer than this is killed.")
    retries: int = Field(1, ge=0, le=10, description="Extra attempts for a stack whose worker died.")
    stop_grace_seconds: float = Field(
        60.0, ge=0, description="On SIGTERM, running stacks may finish for this long (keep below TimeoutStopSec)."
    )

    @field_validator("dask_path_map")
    @classmethod
    def _absolute_prefixes(cls, value: dict[str, str]) -> dict[str, str]:
        for source, target in value.items():
            if not (source.startswith("/") and target.startswith("/")):
                raise ValueError(f"prefixes must be absolute paths (got {source!r} -> {target!r})")
        return value

    @model_validator(mode="after")
    def _dask_needs_scheduler(self) -> WorkerSettings:
        if self.executor == "dask" and not self.dask_scheduler:
            raise ValueError('executor "dask" needs workers.dask_scheduler (e.g. "tcp://server:8786")')
        return self


class ObserverSettings(_Section):
    """How new files are noticed."""

    mode: Literal["inotify", "polling"] = Field("inotify", description="polling for SMB/NFS shares.")
    poll_interval_seconds: float = Field(2.0, gt=0)
    rescan_seconds: float = Field(60.0, gt=0, description="Full rescan of the hot folder (covers dropped events).")


class ResultsSettings(_Section):
    """Where and how results are written, and what happens to inputs afterwards."""

    layout: Literal["mirror", "openscan"] = Field(
        "mirror",
        description="mirror: results/<scan path>/<stack>.<ext>; openscan: <scan>/stacked/stacked_<scan>_<pos>.jpg",
    )
    after_success: Literal["keep", "archive", "delete"] = "keep"
    archive_folder: Path | None = None
    on_failure: Literal["record", "sharpest_frame"] = Field(
        "record",
        description="A stack that fails gets its record; sharpest_frame also puts its sharpest readable frame where "
        "the result would be (marked as a fallback in the record), so a scan keeps an image for every position.",
    )
    masks: tuple[str, ...] = Field(
        (),
        description="Object masks for photogrammetry, one per stack, under each name listed: colmap, meshroom, "
        "realitycapture, metashape, openmvs, or a template such as \"{scan}/masks/{stem}.png\" (see docs/masks.md). "
        "Empty: no masks.",
    )

    @model_validator(mode="after")
    def _archive_needs_folder(self) -> ResultsSettings:
        if self.after_success == "archive" and self.archive_folder is None:
            raise ValueError("after_success 'archive' needs results.archive_folder")
        return self


class LoggingSettings(_Section):
    level: Literal["debug", "info", "warning", "error"] = "info"
    file_max_bytes: int = Field(5_000_000, ge=10_000)
    file_backups: int = Field(3, ge=0, le=100)


class Settings(BaseSettings):
    """Everything focus-watcher can be told. Defaults make ``focus-watcher run`` work in an empty folder."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid", frozen=True, validate_default=True
    )

    hot_folder: Path = Path("hot")
    results_folder: Path = Path("results")
    naming: NamingSettings = Field(default_factory=NamingSettings)
    completeness: CompletenessSettings = Field(default_factory=CompletenessSettings)
    workers: WorkerSettings = Field(default_factory=WorkerSettings)
    observer: ObserverSettings = Field(default_factory=ObserverSettings)
    results: ResultsSettings = Field(default_factory=ResultsSettings)
    stacking: StackingSettings = Field(default_factory=StackingSettings)
    logging: LoggingSettings = Field(default_factory=LoggingSettings)

    @model_validator(mode="after")
    def _results_outside_hot(self) -> Settings:
        # Writing results inside the watched tree would make the daemon re-process its own outputs. The openscan
        # layout is the exception: it writes into the scans' own "stacked" folders, which are never watched.
        hot, results = self.hot_folder.resolve(), self.results_folder.resolve()
        if self.results.layout != "openscan" and (results == hot or hot in results.parents):
            raise ValueError("results_folder must not be inside hot_folder (except with results.layout = openscan)")
        return self

    @model_validator(mode="after")
    def _masks_stay_inside(self) -> Settings:
        # a stack of raw frames has its result in raw_output_format (watcher.layout): no mask may take its name
        for output_format in dict.fromkeys((self.stacking.output_format, self.stacking.raw_output_format)):
            check_entries(self.results.masks, self.results.layout, output_format)
        return self

    @model_validator(mode="after")
    def _openscan_means_jpeg(self) -> Settings:
        # OpenScan3 indexes and uploads stacked/stacked_*.jpg as JPEG: PNG bytes under that name break both.
        if self.results.layout == "openscan" and self.stacking.output_format != "jpg":
            raise ValueError(f'stacking.output_format must be "jpg" with results.layout = "openscan" (got '
                             f'"{self.stacking.output_format}"): OpenScan3 reads stacked/*.jpg as JPEG')
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # CLI flags (init) > environment > TOML file. No .env or secrets files: one place to look.
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls))


def load_settings(config_file: Path | None = None, overrides: dict[str, Any] | None = None) -> Settings:
    """Build the effective settings: defaults < TOML ``config_file`` < environment < ``overrides``.

    ``overrides`` is a nested dict, e.g. ``{"stacking": {"blend": "direct_map"}}`` (what CLI flags set).
    Raises :class:`ConfigError` naming each bad key.
    """
    if config_file is not None and not config_file.is_file():
        raise ConfigError(f"config file not found: {config_file}")

    class _FromFile(Settings):
        model_config = SettingsConfigDict(toml_file=config_file)

    try:
        loaded = _FromFile(**(overrides or {}))
    except ValidationError as exc:
        raise ConfigError(_describe(exc, config_file)) from None
    except ValueError as exc:  # TOML syntax errors surface as ValueError subclasses
        raise ConfigError(f"{config_file}: {exc}") from None
    return Settings.model_construct(**dict(loaded))


def _describe(exc: ValidationError, config_file: Path | None) -> str:
    where = f" (from {config_file}, {ENV_PREFIX}* or flags)" if config_file else f" (from {ENV_PREFIX}* or flags)"
    lines = []
    for error in exc.errors():
        key = ".".join(str(part) for part in error["loc"]) or "settings"
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown key"
        lines.append(f"{key}: {message}")
    return "invalid settings" + where + ":\n  " + "\n  ".join(lines)
