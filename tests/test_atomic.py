from pathlib import Path

import pytest

from hygie_w2l.atomic import atomic_path, check_writable
from hygie_w2l.errors import OutputError


def test_success_replaces_the_file(tmp_path: Path) -> None:
    out = tmp_path / "a.txt"
    out.write_text("old")
    with atomic_path(out) as tmp:
        assert tmp.parent == tmp_path and tmp.suffix == ".txt" and tmp != out
        tmp.write_text("new")
    assert out.read_text() == "new" and len(list(tmp_path.iterdir())) == 1


def test_failure_keeps_the_old_file_and_cleans_up(tmp_path: Path) -> None:
    out = tmp_path / "a.txt"
    out.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(out) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash")
    assert out.read_text() == "old" and len(list(tmp_path.iterdir())) == 1


def test_nothing_written_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(OutputError, match="nothing was written"):
        with atomic_path(tmp_path / "a.bin"):
            pass
    assert list(tmp_path.iterdir()) == []


def test_read_only_file_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "a.txt"
    out.write_text("x")
    out.chmod(0o444)
    with pytest.raises(OutputError, match="read-only"):
        check_writable(out)


def test_missing_folder_is_refused(tmp_path: Path) -> None:
    with pytest.raises(OutputError, match="does not exist"):
        check_writable(tmp_path / "no" / "a.mp4")
