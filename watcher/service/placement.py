"""Where a stack's outputs go (the rules are :mod:`watcher.layout`'s), and their folders made ready to write.

Results are written only through real folders: a folder below the results folder that is a symlink (a
``stacked`` link pointing elsewhere) is refused (:class:`UnsafeFolder`), never written through.

A ``stacked`` or ``masks`` folder created for the openscan layout takes the scan folder's group, with group
read/write and setgid, so the firmware (another user in that group) can list, upload and delete what we write there.

With ``results.masks``, each stack's object mask goes under every name asked for (:mod:`watcher.masks`); the masks
are outputs like the result: one deleted makes the stack be made again.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from watcher.layout import OPENSCAN_FOLDER, scan_parts, stack_files
from watcher.masks import FOLDER as MASKS_FOLDER
from watcher.masks import mask_paths
from watcher.service.naming import StackId, is_safe_component
from watcher.stacking.formats import FORMATS


class UnsafePathError(ValueError):
    """A stack id that would place a file outside the results folder."""


class UnsafeFolder(ValueError):
    """A folder on the way to a result is a symlink or a file: nothing is written through it."""


@dataclass(frozen=True)
class StackPaths:
    image: Path
    record: Path
    depthmap: Path
    masks: tuple[Path, ...] = ()  # the object mask under each name of results.masks (watcher.masks)
    deep_image: Path | None = None  # openscan layout: a raw stack's 16-bit image beside the JPEG (watcher.layout)


class Placement:
    """Where the outputs of each stack go in the results folder ``root``; a stack of raw frames gets
    ``raw_output_format`` (:func:`~watcher.layout.stack_files`)."""

    def __init__(self, root: Path, layout: str, output_format: str, masks: tuple[str, ...] = (),
                 raw_output_format: str = "tif") -> None:
        self.root = root
        self.layout = layout
        self.extension = FORMATS[output_format]
        self.raw_extension = FORMATS[raw_output_format]
        self.masks = masks

    def paths(self, stack: StackId, *, raw: bool = False) -> StackPaths:
        """Where ``stack``'s outputs go (``raw``: a stack of raw frames), below ``root`` as configured (links not
        resolved). The record and depth map are where they are either way.

        Raises :class:`UnsafePathError` for ids that would leave the folder.
        """
        if not all(is_safe_component(part) for part in [*scan_parts(stack.scan), stack.stack]):
            raise UnsafePathError(f"unsafe stack id {str(stack)!r}")
        files = stack_files(stack.scan, stack.stack, self.layout, self.extension,
                            self.raw_extension if raw else None)
        masks = mask_paths(self.masks, self.layout, tuple(scan_parts(stack.scan)), tuple(files.image.split("/")))
        return StackPaths(image=self.root / files.image, record=self.root / files.record,
                          depthmap=self.root / files.depthmap, masks=tuple(self.root / mask for mask in masks),
                          deep_image=self.root / files.deep_image if files.deep_image else None)

    def prepare(self, stack: StackId, *, raw: bool = False) -> StackPaths:
        """:meth:`paths`, with their folders created below ``root``, one real folder at a time.

        Raises :class:`UnsafePathError` for an unsafe id, :class:`UnsafeFolder` if a folder on the way is a
        symlink or a file, ``OSError`` if one cannot be created (full, read-only: try again later).
        """
        paths = self.paths(stack, raw=raw)
        share = _share_with if self.layout == "openscan" else None
        image = real_folder(self.root, paths.image.parent.relative_to(self.root).parts, share)
        ours = real_folder(self.root, paths.record.parent.relative_to(self.root).parts)
        folders = {parent: real_folder(self.root, parent.relative_to(self.root).parts, share)  # each folder once
                   for parent in dict.fromkeys(mask.parent for mask in paths.masks)}
        masks = tuple(folders[mask.parent] / mask.name for mask in paths.masks)
        deep_image = image / paths.deep_image.name if paths.deep_image else None  # beside the image
        return StackPaths(image=image / paths.image.name, record=ours / paths.record.name,
                          depthmap=ours / paths.depthmap.name, masks=masks, deep_image=deep_image)

    def scan_folder(self, stack: StackId) -> Path:
        """The folder of ``stack``'s scan in the results folder (with the openscan layout: the scan itself)."""
        return self.root.joinpath(*scan_parts(stack.scan))


def real_folder(root: Path, parts: Sequence[str],
                on_create: Callable[[Path, os.stat_result], None] | None = None) -> Path:
    """The real path of ``root/parts...``, each folder created if missing, one component at a time.
    ``on_create(folder, parent's stat)`` runs for a ``stacked`` or ``masks`` folder this call created.

    Raises :class:`UnsafeFolder` or ``OSError`` (see :meth:`Placement.prepare`).
    """
    inside = Path(os.path.realpath(root))
    current = inside
    for part in parts:
        parent, current = current, current / part
        try:
            os.mkdir(current)
            created = True
        except FileExistsError:
            created = False
        info = os.lstat(current)
        if not stat.S_ISDIR(info.st_mode):
            what = "a symbolic link" if stat.S_ISLNK(info.st_mode) else "not a folder"
            raise UnsafeFolder(f"{current} is {what}: results are written only through real folders")
        if created and on_create is not None and part in (OPENSCAN_FOLDER, MASKS_FOLDER):
            on_create(current, os.lstat(parent))
    return current


def _share_with(folder: Path, parent: os.stat_result) -> None:
    """Give a new ``stacked`` or ``masks`` folder its scan folder's group, group rwx and setgid (files inherit
    the group).

    The service runs as its own user (umask 0027); OpenScan3 runs as ``openscan`` and must still list, upload
    and delete what is in ``stacked``: the service user is in the scan folder's group (the unit's
    ``SupplementaryGroups=``), so it may hand the folder to that group.
    """
    try:
        os.chown(folder, -1, parent.st_gid)
    except PermissionError:
        return  # not in that group: the folder stays ours alone (doctor says how to fix the unit)
    os.chmod(folder, stat.S_ISGID | 0o770 | (parent.st_mode & 0o005))
