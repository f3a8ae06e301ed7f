"""The real stacks the tests need travel with the repository, with where they come from and their licences."""

from __future__ import annotations

import pytest

from tests.conftest import DATA, vendored


@pytest.mark.parametrize(("folder", "pattern", "count", "licence"), [
    ("focusstack_pcb", "pcb_*.jpg", 7, "MIT"),
    ("cmcguinness_steps", "step*.jpg", 6, "Apache-2.0"),
])
def test_real_stacks_are_vendored_with_source_and_licence(folder, pattern, count, licence):
    frames = vendored(folder, pattern, count)
    assert all(path.read_bytes()[:2] == b"\xff\xd8" for path in frames)
    source = (DATA / folder / "SOURCE.md").read_text()
    assert "github.com/" in source and licence in source
    licence_files = [p for p in (DATA / folder).iterdir() if p.name.startswith("LICENSE")]
    assert len(licence_files) == 1 and licence_files[0].stat().st_size > 500


def test_a_missing_fixture_fails_instead_of_skipping():
    with pytest.raises(pytest.fail.Exception, match="vendored test data is incomplete"):
        vendored("focusstack_pcb", "pcb_*.png", 7)
