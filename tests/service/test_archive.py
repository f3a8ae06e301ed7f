"""Scan zips: what the daemon lists of them, and the claims it refuses before trusting them."""

from __future__ import annotations

import io
import struct
import zipfile

import pytest

from watcher.service.archive import MAX_MEMBERS, ArchiveRefused, list_members


def write_zip(path, members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    path.write_bytes(buffer.getvalue())
    return buffer.getvalue()


def test_flat_members_are_listed_with_their_claimed_sizes(tmp_path):
    write_zip(tmp_path / "s.zip", {"owl_1_1-0.jpg": b"x" * 10, "owl_1_1-1.jpg": b"y" * 20, "sub/owl_1_2-0.jpg": b"z"})
    assert list_members(tmp_path / "s.zip").members == {"owl_1_1-0.jpg": 10, "owl_1_1-1.jpg": 20}


def test_a_zip_still_being_written_is_not_readable_yet(tmp_path):
    data = write_zip(tmp_path / "s.zip", {"a_1-0.jpg": b"x" * 1000})
    (tmp_path / "s.zip").write_bytes(data[: len(data) // 2])
    assert list_members(tmp_path / "s.zip") is None


def test_a_zip_claiming_too_many_members_is_refused_before_its_directory_is_parsed(tmp_path):
    """The end record claims 20 001 members; the directory holds one. Parsing the directory would find the
    mismatch (or build 20 001 ZipInfo objects for a real one): only the claim can be what refuses it."""
    data = bytearray(write_zip(tmp_path / "s.zip", {"a_1-0.jpg": b"x"}))
    end = data.rindex(b"PK\x05\x06")
    struct.pack_into("<HH", data, end + 8, MAX_MEMBERS + 1, MAX_MEMBERS + 1)  # entries on this disk, in all
    (tmp_path / "s.zip").write_bytes(bytes(data))
    with pytest.raises(ArchiveRefused, match=f"claims {MAX_MEMBERS + 1} members"):
        list_members(tmp_path / "s.zip")


def test_claimed_sizes_of_a_bomb_refuse_the_whole_zip(tmp_path):
    """Sizes in the directory are claims: a 1 KiB zip whose members claim 2 x 3.75 GiB is refused unread."""
    data = bytearray(write_zip(tmp_path / "s.zip", {"a_1-0.jpg": b"x" * 100, "a_1-1.jpg": b"y" * 100}))
    at = 0
    while (at := data.find(b"PK\x01\x02", at)) >= 0:  # each central directory entry: claimed size at +24
        struct.pack_into("<I", data, at + 24, 0xF0000000)
        at += 4
    (tmp_path / "s.zip").write_bytes(bytes(data))
    with pytest.raises(ArchiveRefused, match="a zip bomb"):
        list_members(tmp_path / "s.zip")


def test_a_link_named_like_a_zip_is_refused(tmp_path):
    write_zip(tmp_path / "real.zip", {"a_1-0.jpg": b"x"})
    (tmp_path / "s.zip").symlink_to(tmp_path / "real.zip")
    with pytest.raises(ArchiveRefused, match="symbolic link"):
        list_members(tmp_path / "s.zip")
