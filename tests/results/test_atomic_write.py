"""Files kvlab writes go through one atomic writer; a place it cannot write is a
one-line :class:`~kvlab.errors.OutputError` naming the path (exit 2), and no temporary
file stays behind."""

from __future__ import annotations

from pathlib import Path

import pytest

from kvlab.errors import OutputError
from kvlab.results.run_dir import atomic_write_chunks, atomic_write_text


def test_writes_and_replaces(tmp_path: Path) -> None:
    p = tmp_path / "a.txt"
    atomic_write_text(p, "one")
    atomic_write_chunks(p, ["t", "wo"])
    assert p.read_text() == "two"
    assert [q.name for q in tmp_path.iterdir()] == ["a.txt"]


@pytest.mark.parametrize("kind", ["directory", "missing parent", "under a file"])
def test_a_place_it_cannot_write_is_one_line(tmp_path: Path, kind: str) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "f").write_text("x")
    target = {
        "directory": tmp_path / "d",
        "missing parent": tmp_path / "nope" / "a.txt",
        "under a file": tmp_path / "f" / "a.txt",
    }[kind]
    with pytest.raises(OutputError) as e:
        atomic_write_text(target, "text")
    assert str(e.value).startswith(f"cannot write {target}: ")
    assert "\n" not in str(e.value) and e.value.exit_code == 2
    assert sorted(q.name for q in tmp_path.iterdir()) == ["d", "f"]
    assert list((tmp_path / "d").iterdir()) == []
