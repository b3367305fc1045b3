"""Atomic writes: a failure mid-write leaves the previous file or folder intact."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from loopline.core.io import atomic_dir, atomic_path, read_json, write_json, write_parquet


class SimulatedCrashError(RuntimeError):
    """Stands for a crash in the middle of writing."""


def _write_then_crash(destination, write) -> None:
    with destination as tmp:
        write(tmp)
        raise SimulatedCrashError


def test_failed_write_keeps_the_previous_file(tmp_path: Path) -> None:
    target = tmp_path / "report.json"
    write_json({"version": 1}, target)
    with pytest.raises(SimulatedCrashError):
        _write_then_crash(atomic_path(target), lambda tmp: tmp.write_text('{"version": 2, "tr'))
    assert read_json(target) == {"version": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]


def test_successful_write_replaces_the_file_and_is_readable(tmp_path: Path) -> None:
    target = tmp_path / "out" / "table.parquet"
    write_parquet(pd.DataFrame({"a": [1, 2]}), target)
    write_parquet(pd.DataFrame({"a": [3]}), target)
    assert pd.read_parquet(target)["a"].tolist() == [3]
    assert oct(target.stat().st_mode & 0o777) == "0o644"


def test_failed_directory_build_keeps_the_previous_directory(tmp_path: Path) -> None:
    target = tmp_path / "docs"
    with atomic_dir(target) as tmp:
        (tmp / "index.html").write_text("old")
    with pytest.raises(SimulatedCrashError):
        _write_then_crash(atomic_dir(target), lambda tmp: (tmp / "index.html").write_text("half"))
    assert (target / "index.html").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["docs"]


def test_directory_swap_replaces_the_whole_tree(tmp_path: Path) -> None:
    target = tmp_path / "docs"
    with atomic_dir(target) as tmp:
        (tmp / "stale.html").write_text("x")
    with atomic_dir(target) as tmp:
        (tmp / "index.html").write_text("new")
    assert [p.name for p in target.iterdir()] == ["index.html"]
