"""The structure of raw files: is the file whole, and what does its header say -- before any pixel is read.

DNG has no end marker. A DNG (and a TIFF-based camera raw: CR2, NEF, ARW, ORF, RW2, PEF, ...) is whole when its
structure is: the header, every IFD (the IFD0 chain, SubIFDs, the EXIF, GPS and Interop IFDs), every out-of-line
tag value, and every strip or tile of every image lie inside the file, with as many strips or tiles as the
image's size needs, and uncompressed ones long enough for every row. Only the IFDs and their tag arrays are read
(well under a KiB for a Picamera2 DNG), never the pixels: reads go through :class:`Source`, which reads at offsets
(``os.pread`` on a file descriptor, or slices of bytes).

A partial file always fails this check when it is written the way Picamera2, PiDNG and OpenScan3 write (header and
IFDs first, pixel data after); a writer that pre-sizes a file and fills it in place would not. So the daemon also
waits until the file's size has settled and no writer has it open (:mod:`watcher.service.tracker`).

Also here: :func:`raw_header` -- size, bits and CFA-ness of the raw image, for the pixel-count check (a
"decompression bomb") and the memory estimate -- and the same whole-file check for the two other containers camera
raws come in: ISO BMFF (CR3) and Fujifilm's RAF.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field

# TIFF / DNG tags
NEW_SUBFILE_TYPE, IMAGE_WIDTH, IMAGE_LENGTH, BITS_PER_SAMPLE, COMPRESSION = 254, 256, 257, 258, 259
PHOTOMETRIC, MAKE, MODEL, STRIP_OFFSETS, ORIENTATION, SAMPLES_PER_PIXEL = 262, 271, 272, 273, 274, 277
ROWS_PER_STRIP, STRIP_BYTE_COUNTS, PLANAR_CONFIG = 278, 279, 284
TILE_WIDTH, TILE_LENGTH, TILE_OFFSETS, TILE_BYTE_COUNTS, SUB_IFDS = 322, 323, 324, 325, 330
JPEG_IF_OFFSET, JPEG_IF_LENGTH = 513, 514
CFA_PATTERN = 33422
EXIF_IFD, GPS_IFD, INTEROP_IFD = 34665, 34853, 40965
DNG_VERSION = 50706
PHOTOMETRIC_CFA, PHOTOMETRIC_LINEAR_RAW = 32803, 34892
_JPEG_COMPRESSIONS = (6, 7, 34892)  # old JPEG, JPEG (lossless in DNG), lossy DNG

_TYPES = {1: ("B", 1), 2: ("s", 1), 3: ("H", 2), 4: ("I", 4), 5: ("II", 8), 6: ("b", 1), 7: ("B", 1),
          8: ("h", 2), 9: ("i", 4), 10: ("ii", 8), 11: ("f", 4), 12: ("d", 8), 13: ("I", 4)}
# TIFF magic numbers: 42 standard; Olympus ORF 0x4F52 ('RO') and 0x5352 ('RS'); Panasonic RW2 0x55.
_MAGICS = {42: "tiff", 0x4F52: "orf", 0x5352: "orf", 0x55: "rw2"}
_MAX_IFDS = 64
_MAX_ENTRIES = 4096
_MAX_DECODED_VALUES = 1 << 20  # strip/tile arrays longer than this are refused (a 16 MP DNG has 1 .. 3496)
_SMALL_VALUES = 64  # out-of-line values with more entries than this are checked, not decoded (except chunk arrays)


class NotTiff(ValueError):
    """The bytes are not a TIFF-structured file (e.g. a JPEG renamed .dng)."""


class Damaged(ValueError):
    """A TIFF structure that points outside the file or contradicts itself: truncated or corrupt."""


class Source:
    """Random access to a file's bytes without reading all of them: bytes, or an open file descriptor (pread).

    ``partial``: the bytes are only the start of the file (a header), so data beyond them is unknown rather than
    missing.
    """

    def __init__(self, data: bytes | memoryview | None = None, *, fd: int | None = None, partial: bool = False):
        if (data is None) == (fd is None):
            raise ValueError("give data or fd")
        self._data = data
        self._fd = fd
        self.size = len(data) if data is not None else os.fstat(fd).st_size
        self.partial = partial and data is not None

    def read(self, offset: int, length: int) -> bytes:
        """Exactly ``length`` bytes at ``offset``, or :class:`Damaged` if the file ends first."""
        if offset < 0 or length < 0 or offset + length > self.size:
            raise Damaged(f"{length} bytes at {offset} lie past the end of the file ({self.size} bytes)")
        if self._data is not None:
            return bytes(self._data[offset : offset + length])
        chunk = os.pread(self._fd, length, offset)
        if len(chunk) != length:
            raise Damaged(f"the file ended while reading at {offset}")
        return chunk


def as_source(obj: Source | bytes | memoryview | int) -> Source:
    """``obj`` as a :class:`Source`: bytes (the whole file) or an open file descriptor."""
    if isinstance(obj, Source):
        return obj
    if isinstance(obj, int):
        return Source(fd=obj)
    return Source(obj)


@dataclass
class Entry:
    tag: int
    type: int
    count: int
    offset: int | None  # where the value lives in the file when it is not inline
    values: tuple  # decoded (ASCII: (str,)); empty when not decoded


@dataclass
class Ifd:
    offset: int
    role: str  # "ifd0", "ifd1", "subifd", "exif", "gps", "interop"
    tags: dict[int, Entry] = field(default_factory=dict)

    def get(self, tag: int, default=None):
        entry = self.tags.get(tag)
        if entry is None or not entry.values:
            return default
        return entry.values[0]

    def all(self, tag: int) -> tuple:
        entry = self.tags.get(tag)
        return entry.values if entry else ()


@dataclass
class TiffWalk:
    byteorder: str  # "<" or ">"
    kind: str  # "tiff" | "orf" | "rw2"
    size: int
    ifds: list[Ifd]


def walk_tiff(obj: Source | bytes | memoryview | int) -> TiffWalk:
    """Parse every IFD reachable from the header: the IFD0 chain, SubIFDs, EXIF/GPS/Interop IFDs.

    Every out-of-line value must lie inside the file (unless the source is partial); small values and the
    strip/tile arrays are decoded. Raises :class:`NotTiff` or :class:`Damaged`.
    """
    src = as_source(obj)
    if src.size < 8:
        if src.size >= 4 and src.read(0, 4) in (b"II*\x00", b"MM\x00*"):
            raise Damaged("truncated TIFF header")
        raise NotTiff(what_it_is(src.read(0, src.size)))
    head = src.read(0, 8)
    order = {b"II": "<", b"MM": ">"}.get(head[:2])
    if order is None:
        raise NotTiff(what_it_is(head))
    (magic,) = struct.unpack(order + "H", head[2:4])
    if magic not in _MAGICS:
        raise NotTiff("a BigTIFF file, not a raw file" if magic == 43 else what_it_is(head))
    (first,) = struct.unpack(order + "I", head[4:8])
    walk = TiffWalk(order, _MAGICS[magic], src.size, [])
    seen: set[int] = set()
    todo: list[tuple[int, str, bool]] = [(first, "ifd0", True)]
    chain = 0
    while todo:
        offset, role, follow_next = todo.pop(0)
        if offset == 0:
            continue
        if offset in seen:
            raise Damaged(f"the IFD at {offset} is reached twice (a loop)")
        if len(seen) >= _MAX_IFDS:
            raise Damaged(f"more than {_MAX_IFDS} IFDs")
        seen.add(offset)
        if src.partial and offset + 2 > src.size:
            continue  # beyond the header we were given: unknown, not missing
        ifd, next_offset = _read_ifd(src, order, offset, role)
        walk.ifds.append(ifd)
        if follow_next and next_offset:
            chain += 1
            todo.append((next_offset, f"ifd{chain}", True))
        for sub in ifd.all(SUB_IFDS):
            todo.append((sub, "subifd", True))
        for tag, name in ((EXIF_IFD, "exif"), (GPS_IFD, "gps"), (INTEROP_IFD, "interop")):
            if ifd.get(tag):
                todo.append((ifd.get(tag), name, False))
    return walk


def _read_ifd(src: Source, order: str, offset: int, role: str) -> tuple[Ifd, int]:
    (count,) = struct.unpack(order + "H", src.read(offset, 2))
    if count == 0 or count > _MAX_ENTRIES:
        raise Damaged(f"the IFD at {offset} claims {count} entries")
    if src.partial and offset + 2 + 12 * count + 4 > src.size:
        count = (src.size - offset - 6) // 12  # a header cut inside an IFD: read the entries we have
        table = src.read(offset + 2, 12 * count) + b"\0\0\0\0"
    else:
        table = src.read(offset + 2, 12 * count + 4)
    ifd = Ifd(offset, role)
    for k in range(count):
        tag, kind, n = struct.unpack(order + "HHI", table[12 * k : 12 * k + 8])
        inline = table[12 * k + 8 : 12 * k + 12]
        fmt, size = _TYPES.get(kind, (None, 0))
        if fmt is None:  # an unknown type: readers skip it; its length is unknown, nothing to check
            ifd.tags[tag] = Entry(tag, kind, n, None, ())
            continue
        length = size * n
        if length <= 4:
            ifd.tags[tag] = Entry(tag, kind, n, None, _decode(order, kind, fmt, n, inline[:length]))
            continue
        (where,) = struct.unpack(order + "I", inline)
        if where + length > src.size:
            if src.partial:
                ifd.tags[tag] = Entry(tag, kind, n, where, ())
                continue
            raise Damaged(f"tag {tag} of the IFD at {offset}: {length} bytes at {where} lie past the end of the "
                          f"file ({src.size} bytes)")
        chunks = tag in (STRIP_OFFSETS, STRIP_BYTE_COUNTS, TILE_OFFSETS, TILE_BYTE_COUNTS, SUB_IFDS)
        if n > _SMALL_VALUES and not chunks:
            ifd.tags[tag] = Entry(tag, kind, n, where, ())
            continue
        if n > _MAX_DECODED_VALUES:
            raise Damaged(f"tag {tag} has {n} values")
        ifd.tags[tag] = Entry(tag, kind, n, where, _decode(order, kind, fmt, n, src.read(where, length)))
    (next_offset,) = struct.unpack(order + "I", table[12 * count : 12 * count + 4])
    return ifd, next_offset


def _decode(order: str, kind: int, fmt: str, n: int, data: bytes) -> tuple:
    if kind == 2:
        return (data.split(b"\x00", 1)[0].decode("latin-1"),)
    if kind in (5, 10):
        pairs = struct.unpack(order + fmt[0] * (2 * n), data)
        return tuple(pairs[2 * i] / pairs[2 * i + 1] if pairs[2 * i + 1] else 0.0 for i in range(n))
    return struct.unpack(order + fmt * n, data)


def what_it_is(head: bytes) -> str:
    """What a file that is not TIFF-structured is, from its first bytes, for a one-line error."""
    if head.startswith(b"\xff\xd8"):
        return "a JPEG file, not a raw file (renamed?)"
    if head.startswith(b"\x89PNG"):
        return "a PNG file, not a raw file (renamed?)"
    if not head:
        return "an empty file"
    return "not a raw file LibRaw or focus-watcher knows (header " + head[:8].hex(" ") + ")"


@dataclass(frozen=True)
class ImageData:
    """One image's pixel data as its IFD describes it."""

    ifd: Ifd
    width: int
    height: int
    bits: int
    samples: int
    compression: int
    photometric: int
    subfile: int
    tiled: bool
    offsets: tuple[int, ...]  # of the strips or tiles
    counts: tuple[int, ...]
    rows_per_chunk: int  # rows per strip, or the tile length
    tile_width: int  # the image width for strips

    @property
    def is_raw(self) -> bool:
        """The full-size raw image of a DNG: CFA or LinearRaw, not a reduced-resolution preview."""
        return self.photometric in (PHOTOMETRIC_CFA, PHOTOMETRIC_LINEAR_RAW) and not self.subfile & 1


def images(walk: TiffWalk, *, strict: bool = True) -> list[ImageData]:
    """Every IFD that has pixel data, described; with ``strict``, checked: every strip/tile inside the file, as
    many as the size needs, uncompressed ones long enough. Raises :class:`Damaged`.

    ``strict=False`` describes without checking (for the header: the pixel-count check must come first, so that a
    bomb is reported as too large rather than as damaged).
    """
    found = []
    for ifd in walk.ifds:
        tiled = TILE_OFFSETS in ifd.tags
        offsets = ifd.all(TILE_OFFSETS if tiled else STRIP_OFFSETS)
        counts = ifd.all(TILE_BYTE_COUNTS if tiled else STRIP_BYTE_COUNTS)
        if not tiled and STRIP_OFFSETS not in ifd.tags:
            if strict and ifd.get(JPEG_IF_OFFSET) is not None:  # old-style thumbnail (EXIF IFD1, NEF, CR2)
                start, length = ifd.get(JPEG_IF_OFFSET), ifd.get(JPEG_IF_LENGTH, 0)
                if start + length > walk.size:
                    raise Damaged(f"{ifd.role}: a JPEG thumbnail of {length} bytes at {start} lies past the end of "
                                  f"the file: truncated")
            continue
        width, height = ifd.get(IMAGE_WIDTH, 0), ifd.get(IMAGE_LENGTH, 0)
        samples, bits = ifd.get(SAMPLES_PER_PIXEL, 1), ifd.get(BITS_PER_SAMPLE, 1)
        planes = samples if ifd.get(PLANAR_CONFIG, 1) == 2 else 1
        if tiled:
            tile_width, rows = ifd.get(TILE_WIDTH, 0), ifd.get(TILE_LENGTH, 0)
        else:
            tile_width, rows = width, min(ifd.get(ROWS_PER_STRIP, height) or height, max(height, 1))
        image = ImageData(ifd, width, height, bits, samples, ifd.get(COMPRESSION, 1), ifd.get(PHOTOMETRIC, 0),
                          ifd.get(NEW_SUBFILE_TYPE, 0), tiled, offsets, counts, rows, tile_width)
        if strict:
            _check(image, walk.size, planes)
        found.append(image)
    return found


def _check(image: ImageData, size: int, planes: int) -> None:
    kind = "tile" if image.tiled else "strip"
    where = f"{image.ifd.role} at {image.ifd.offset}"
    if len(image.offsets) != len(image.counts):
        raise Damaged(f"{where}: {len(image.offsets)} {kind} offsets but {len(image.counts)} byte counts")
    for start, length in zip(image.offsets, image.counts):
        if start + length > size:
            raise Damaged(f"{where}: a {kind} of {length} bytes at {start} ends past the end of the file ({size} "
                          f"bytes): truncated")
    if not image.width or not image.height:
        return
    if image.tiled and (not image.tile_width or not image.rows_per_chunk):
        raise Damaged(f"{where}: tile offsets without a tile size")
    across = -(-image.width // image.tile_width) if image.tiled else 1
    needed = across * -(-image.height // image.rows_per_chunk) * planes
    if len(image.offsets) != needed:
        raise Damaged(f"{where}: {len(image.offsets)} {kind}s, where {image.width}x{image.height} needs {needed}")
    if image.compression == 1:  # uncompressed: each chunk must hold all its rows
        samples = 1 if planes > 1 else image.samples
        row_bytes = -(-image.tile_width * image.bits * samples // 8)
        down = -(-image.height // image.rows_per_chunk)
        for k, length in enumerate(image.counts):
            rows = image.rows_per_chunk if image.tiled else min(
                image.rows_per_chunk, image.height - (k % down) * image.rows_per_chunk)
            if length < row_bytes * rows:
                raise Damaged(f"{where}: uncompressed {image.width}x{image.height} {image.bits}-bit data, but a "
                              f"{kind} holds only {length} bytes")


def _jpeg_chunks_end(src: Source, found: list[ImageData]) -> bool:
    """Every JPEG-compressed strip or tile (compressed DNGs: lossless JPEG tiles) ends with its FF D9 marker: 2
    bytes read per chunk, for a file whose structure was written before its data."""
    for image in found:
        if image.compression not in _JPEG_COMPRESSIONS:
            continue
        for start, length in zip(image.offsets, image.counts):
            if length < 2 or b"\xff\xd9" not in src.read(start + length - min(length, 4), min(length, 4)):
                return False
    return True


def tiff_is_whole(obj: Source | bytes | memoryview | int) -> tuple[bool, str]:
    """(True, a summary) if the TIFF-structured file (DNG or a TIFF-based camera raw) is whole; else (False, why).

    ``obj``: the file's bytes, an open file descriptor, or a :class:`Source`.
    """
    src = as_source(obj)
    try:
        found = images(walk_tiff(src))
        if not _jpeg_chunks_end(src, found):
            return False, "a JPEG-compressed tile does not end with its end marker: truncated or corrupt"
    except (NotTiff, Damaged) as exc:
        return False, str(exc)
    if not found:
        return False, "no image data in the file"
    main = max(found, key=lambda image: (image.is_raw, image.width * image.height))
    return True, f"{len(found)} images, raw {main.width}x{main.height} {main.bits}-bit"


@dataclass(frozen=True)
class RawHeader:
    """What a TIFF-structured raw file's IFDs say about its raw image."""

    dng: bool  # a DNG (DNGVersion tag), else a TIFF-based camera raw or a plain TIFF
    width: int
    height: int
    bits: int
    cfa: bool  # a colour filter array (Bayer) image, one sample per pixel; False for LinearRaw and plain RGB
    compression: int
    make: str
    model: str
    orientation: int  # TIFF Orientation, 1 (as stored) when absent
    stray_tile_tags: bool  # PiDNG 2022-08 .. 2025-01: strips with TileWidth/TileLength tags (LibRaw fails on it)

    @property
    def pixels(self) -> int:
        return self.width * self.height


def raw_header(obj: Source | bytes | memoryview | int) -> RawHeader:
    """The raw image's header of a DNG or TIFF-based raw, from its IFDs alone (no strip checked or read).

    The raw image is a DNG's full-size CFA or LinearRaw image; else the largest image in the file. Works on the
    first bytes of a file only (a :class:`Source` with ``partial=True``) as long as they hold the IFDs. Raises
    :class:`NotTiff` or :class:`Damaged`.
    """
    walk = walk_tiff(obj)
    found = images(walk, strict=False)
    if not found:
        raise Damaged("no image in the file's header")
    pick = max(found, key=lambda image: (image.is_raw, image.width * image.height))
    ifd0 = walk.ifds[0]
    dng = ifd0.get(DNG_VERSION) is not None
    cfa = pick.photometric == PHOTOMETRIC_CFA
    stray = not pick.tiled and TILE_WIDTH in pick.ifd.tags
    return RawHeader(dng, pick.width, pick.height, pick.bits, cfa, pick.compression,
                     str(ifd0.get(MAKE, "") or pick.ifd.get(MAKE, "")).strip(),
                     str(ifd0.get(MODEL, "") or pick.ifd.get(MODEL, "")).strip(),
                     ifd0.get(ORIENTATION, 1) or 1, stray)


def bmff_is_whole(src: Source) -> tuple[bool, str]:
    """CR3 (ISO BMFF): the top-level boxes tile the file exactly, from ``ftyp`` to a last box (``mdat``) ending at
    the end of the file. A box of size 0 ("to the end of the file") cannot be checked: not whole."""
    pos, boxes = 0, []
    try:
        while pos < src.size:
            size, kind = struct.unpack(">I4s", src.read(pos, 8))
            if size == 1:
                (size,) = struct.unpack(">Q", src.read(pos + 8, 8))
            elif size == 0:
                return False, f"box {kind!r} runs to the end of the file: its length cannot be checked"
            if size < 8:
                return False, f"box {kind!r} at {pos} has size {size}"
            boxes.append(kind.decode("latin-1"))
            if pos + size > src.size:
                return False, (f"box {kind.decode('latin-1')!r} at {pos} needs {size} bytes, the file ends "
                               f"{src.size - pos} bytes later: truncated")
            pos += size
    except Damaged as exc:
        return False, str(exc)
    if not boxes or boxes[0] != "ftyp":
        return False, "not an ISO media file (no ftyp box first)"
    return True, f"{len(boxes)} boxes"


def raf_is_whole(src: Source) -> tuple[bool, str]:
    """Fujifilm RAF: the header's (offset, length) pairs of the JPEG preview, the metadata and the CFA data
    (big-endian, bytes 84..107) lie inside the file."""
    try:
        head = src.read(0, 108)
    except Damaged:
        return False, "shorter than a RAF header: truncated"
    fields = struct.unpack(">6I", head[84:108])
    for name, start, length in zip(("JPEG preview", "metadata", "raw data"), fields[0::2], fields[1::2]):
        if start + length > src.size:
            return False, f"the RAF {name} ({length} bytes at {start}) ends past the end of the file: truncated"
    return True, "RAF blocks inside the file"


def raw_is_whole(obj: Source | bytes | memoryview | int) -> tuple[bool, str]:
    """Whether a raw file is whole, by its container (from its first bytes): TIFF (DNG, CR2, NEF, ARW, ORF, RW2,
    PEF, ...), ISO BMFF (CR3) or RAF. Other files (CRW, X3F, MRW; or no raw file at all) have no structure we
    check: (True, ...), and the settle time alone decides. ``obj``: the file's bytes, an open file descriptor, or
    a :class:`Source`."""
    src = as_source(obj)
    head = src.read(0, min(16, src.size))
    if head[:2] in (b"II", b"MM"):
        return tiff_is_whole(src)
    if head[4:8] == b"ftyp":
        return bmff_is_whole(src)
    if head.startswith(b"FUJIFILMCCD-RAW"):
        return raf_is_whole(src)
    return True, "no structure to check"
