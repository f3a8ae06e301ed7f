"""Where a stack's object mask goes (``results.masks``): each mesher's own naming, or a template of the user's.

One mask is made per stack (an 8-bit grey PNG in the result's geometry, 255 object, 0 backdrop:
:mod:`watcher.stacking.mask`) and written under every name asked for. Every name is a template relative to the
results folder, with these placeholders (values for the result ``proj/scan01/stacked/stacked_scan01_007.jpg`` of
the openscan layout, and ``proj/scan01/scan01_007.jpg`` of the mirror layout):

- ``{scan}``: the scan's folder below the results folder (``proj/scan01``; nothing for a scan at the top);
- ``{folder}``: the result's folder below the results folder (``proj/scan01/stacked``; ``proj/scan01``);
- ``{name}``: the result's file name (``stacked_scan01_007.jpg``; ``scan01_007.jpg``);
- ``{stem}``: that name without its extension (``stacked_scan01_007``; ``scan01_007``).

The meshers' layouts are such templates (:data:`LAYOUTS`). In the ``openscan`` layout the results folder is
OpenScan3's projects folder, watched for frames: every mask goes to the scan's ``masks`` folder (:data:`FOLDER`),
which the daemon never watches, OpenScan3's cloud upload and its "photos only" zip leave out (they take JPEGs only)
and its full zip carries; never into ``stacked``, whose JPEGs the firmware indexes and uploads as photos
(OpenScan-org/OpenScan3 58e16535, ``controllers/services/cloud.py`` ``_collect_project_photos``,
``routers/v0_9/projects.py`` ``download_project``). A template of the user's must then stay in that folder too.
"""

from __future__ import annotations

import string

from watcher.stacking.formats import FORMATS

FOLDER = "masks"
PLACEHOLDERS = ("scan", "folder", "name", "stem")

# Each mesher's naming for the mask of the image <folder>/<name>, per results layout.
LAYOUTS: dict[str, dict[str, str]] = {
    "mirror": {
        # COLMAP: "--ImageReader.mask_path: ... the corresponding mask must have the same sub-path below this root as
        # the image has below image_path ... image_path/abc/012.jpg ... mask_path/abc/012.jpg.png"
        # (colmap/colmap src/colmap/controllers/image_reader.h; doc/faq.rst "Mask image regions"); fusion
        # (--StereoFusion.mask_path, src/colmap/mvs/fusion.cc) reads only <name>.png. A tree of its own: COLMAP
        # reads image_path recursively, so masks inside it would be read as images.
        "colmap": f"{FOLDER}/{{scan}}/{{name}}.png",
        # Meshroom/AliceVision: masksFolder holds <view id>.<maskExtension> or <image stem>.<maskExtension>
        # (alicevision/AliceVision src/aliceVision/image/io.cpp tryLoadMask; FeatureExtractor.cpp; the
        # FeatureExtraction node's "Filename should be the same or the image UID").
        "meshroom": f"{{scan}}/{FOLDER}/{{stem}}.png",
        # RealityCapture/RealityScan image layers: "the original file name (including the file format extension)
        # ... plus the extension for each layer ... DSC_0001.jpg.mask.png", beside the image
        # (https://rchelp.capturingreality.com/en-US/tools/imglayers.htm).
        "realitycapture": "{folder}/{name}.mask.png",
        # Metashape: Import Masks "From File" with a filename template; Agisoft's own script writes
        # <image folder>/masks/<stem>_mask.png and imports "{filename}_mask.png" ({filename}: the name without its
        # extension) (agisoft-llc/metashape-scripts src/automatic_masking.py).
        "metashape": f"{{scan}}/{FOLDER}/{{stem}}_mask.png",
        # OpenMVS DensifyPointCloud --mask-path DIR: DIR/<image name without folder and extension>.mask.png, pixels
        # equal to --ignore-mask-label are ignored (cdcseacave/openMVS v2.3.0 apps/DensifyPointCloud/
        # DensifyPointCloud.cpp; libs/MVS/DepthMap.cpp ImportIgnoreMask).
        "openmvs": f"{{scan}}/{FOLDER}/{{stem}}.mask.png",
    },
    # The same names, all in <scan>/masks (RealityCapture's then need moving beside the images: docs/masks.md).
    "openscan": {
        "colmap": f"{{scan}}/{FOLDER}/{{name}}.png",
        "meshroom": f"{{scan}}/{FOLDER}/{{stem}}.png",
        "realitycapture": f"{{scan}}/{FOLDER}/{{name}}.mask.png",
        "metashape": f"{{scan}}/{FOLDER}/{{stem}}_mask.png",
        "openmvs": f"{{scan}}/{FOLDER}/{{stem}}.mask.png",
    },
}

# A result to try templates on at start: a scan two folders deep, so a template's reach is seen.
_SAMPLE_SCAN = ("project", "scan01")
_SAMPLE_STEM = {"mirror": "scan01_007", "openscan": "stacked_scan01_007"}


class TemplateError(ValueError):
    """A ``results.masks`` entry that is neither a layout nor a template that stays in the results folder."""


def mask_paths(entries: tuple[str, ...], layout: str, scan: tuple[str, ...], image: tuple[str, ...]) -> list[str]:
    """The mask's paths for the result ``image``, relative to the results folder (POSIX, each once).

    ``entries``: ``results.masks``, checked at start (:func:`check_entries`); ``layout``: ``results.layout``;
    ``scan`` and ``image``: the scan's folder and the result, as folder names below the results folder (each a
    safe name: no ``..``, no ``/``).
    """
    paths = []
    for entry in entries:
        path = _render(LAYOUTS[layout].get(entry, entry), scan, image)
        if path not in paths:
            paths.append(path)
    return paths


def check_entries(entries: tuple[str, ...], layout: str, output_format: str) -> None:
    """Refuse, with a message saying why, an entry that is not a layout name nor a template that names one mask
    per stack inside the results folder -- inside the scan's ``masks`` folder with the ``openscan`` layout -- as
    a PNG that is not one of the stack's other outputs (raises :class:`TemplateError`)."""
    stem, extension = _SAMPLE_STEM[layout], FORMATS[output_format]
    folder = (*_SAMPLE_SCAN, "stacked") if layout == "openscan" else _SAMPLE_SCAN
    image = (*folder, stem + extension)
    others = {"/".join((*folder, stem + suffix)) for suffix in (extension, ".json", ".depth.png")}
    for entry in entries:
        if entry in LAYOUTS[layout]:
            continue
        problem = _template_problem(entry, layout, image, others)
        if problem:
            raise TemplateError(f"results.masks: {entry!r} is not a mask layout ({', '.join(LAYOUTS[layout])}) "
                                f"nor a usable template: {problem}")


def _template_problem(template: str, layout: str, image: tuple[str, ...], others: set[str]) -> str | None:
    try:
        fields = [(name, spec, conversion) for _, name, spec, conversion in string.Formatter().parse(template)
                  if name is not None]
    except ValueError as exc:
        return f"{exc} (a literal brace is written {{{{ or }}}})"
    unknown = sorted({name for name, _, _ in fields if name not in PLACEHOLDERS})
    if unknown or any(spec or conversion for _, spec, conversion in fields):
        shown = ", ".join("{" + name + "}" for name in PLACEHOLDERS)
        return f"placeholders are {shown}, without format specs (got {', '.join(unknown) or 'a format spec'})"
    if not {"name", "stem"} & {name for name, _, _ in fields}:
        return "it has no {name} or {stem}, so every stack's mask would be the same file"
    if not template.endswith(".png"):
        return "a mask is a PNG: the template must end in .png"
    if template.startswith("/"):
        return "it is absolute: a template is relative to the results folder"
    try:
        path = _render(template, _SAMPLE_SCAN, image)
    except TemplateError as exc:
        return str(exc)
    if path in others:
        return f"it names one of the stack's other outputs ({path})"
    masks = "/".join((*_SAMPLE_SCAN, FOLDER)) + "/"
    if layout == "openscan" and not path.startswith(masks):
        return (f"with results.layout = \"openscan\" masks must stay in the scan's {FOLDER} folder (for "
                f"{'/'.join(image)}: {path} is not in {masks}); start the template with {{scan}}/{FOLDER}/")
    return None


def _render(template: str, scan: tuple[str, ...], image: tuple[str, ...]) -> str:
    name = image[-1]
    stem = name.rsplit(".", 1)[0] if "." in name.lstrip(".") else name
    text = template.format(scan="/".join(scan), folder="/".join(image[:-1]), name=name, stem=stem)
    parts = [part for part in text.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise TemplateError(f"it leaves the results folder (for {'/'.join(image)}: {text})")
    return "/".join(parts)
