"""Crash-safe file output: everything is written to a temporary sibling, then renamed.

A reader sees either the previous complete file or the new complete file, never a half
written one, because `os.replace` within one directory is atomic on POSIX filesystems.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd

FILE_MODE = 0o644
DIR_MODE = 0o755


@contextlib.contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temporary path next to `target`; move it onto `target` only on success.

    If the body raises, the temporary file is removed and `target` is left untouched.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with tmp.open("rb+") as handle:
            os.fsync(handle.fileno())
        tmp.chmod(FILE_MODE)  # mkstemp creates 0600; outputs are ordinary readable files
        tmp.replace(target)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_dir(target: Path) -> Iterator[Path]:
    """Yield an empty temporary directory; swap it in for `target` only on success.

    The old directory is renamed aside before the new one moves in and deleted after, so
    a crash leaves either the old or the new tree (plus a `.old` copy to inspect).
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    tmp.chmod(DIR_MODE)
    try:
        yield tmp
        swap_dir(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def swap_dir(source: Path, target: Path) -> None:
    """Move the directory `source` onto `target` (same file system), replacing it.

    The old `target` is renamed aside first and deleted after, so a crash leaves the old
    or the new tree (plus a `.old` copy to inspect), never a mix.
    """
    old = target.with_name(f".{target.name}.old")
    if old.exists():
        shutil.rmtree(old)
    if target.exists():
        target.replace(old)
    source.replace(target)
    shutil.rmtree(old, ignore_errors=True)


def write_json(data: Any, target: Path) -> None:
    """Write `data` as indented, key-sorted JSON (stable diffs in git and DVC)."""
    with atomic_path(target) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def read_json(source: Path) -> Any:
    """Read a JSON file written by `write_json`."""
    return json.loads(source.read_text())


def write_parquet(frame: pd.DataFrame, target: Path) -> None:
    """Write a DataFrame as Parquet (zstd), without the index."""
    with atomic_path(target) as tmp:
        frame.to_parquet(tmp, index=False, compression="zstd")


def shown(path: Path) -> Path:
    """`path` as a person reads it in a message: relative to the working folder if inside."""
    here = Path.cwd()
    return path.relative_to(here) if path.is_absolute() and path.is_relative_to(here) else path
