"""The pinned raw data: reproducible bytes, and no overwriting of anyone's data."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from loopline.core.errors import DataVersionError
from loopline.data.datasets.base import Dataset, write_tables
from loopline.data.datastore import directory_md5, ensure_data, pinned_md5
from tests.conftest import ROOT


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory, full_tables: dict) -> Path:
    folder = tmp_path_factory.mktemp("raw") / "data"
    write_tables(full_tables, folder)
    return folder


def test_rebuilt_tables_hash_to_exactly_what_data_dvc_pins(written: Path) -> None:
    """The bootstrap on a fresh clone relies on this: same versions, same bytes."""
    assert directory_md5(written) == pinned_md5(ROOT / "data.dvc")


def test_writing_twice_gives_identical_bytes(
    written: Path, full_tables: dict, tmp_path: Path
) -> None:
    write_tables(full_tables, tmp_path / "again")
    assert directory_md5(tmp_path / "again") == directory_md5(written)


def _pin(folder: Path, md5: str) -> Path:
    dvc_file = folder / "data.dvc"
    dvc_file.write_text(f"outs:\n- md5: {md5}\n  path: data\n")
    return dvc_file


def test_a_locally_changed_data_folder_is_never_overwritten(
    tmp_path: Path, dataset: Dataset
) -> None:
    dvc_file = _pin(tmp_path, "0" * 32 + ".dir")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "flights.parquet").write_text("my edits")
    with pytest.raises(DataVersionError, match="changed locally"):
        ensure_data(dataset, tmp_path / "data", dvc_file)
    assert (tmp_path / "data" / "flights.parquet").read_text() == "my edits"


def test_rebuilt_data_with_another_hash_is_refused_and_leaves_nothing(
    tmp_path: Path, dataset: Dataset
) -> None:
    """No remote holds the data and the rebuild differs from the pin: fail, write nothing."""
    dvc_file = _pin(tmp_path, "f" * 32 + ".dir")
    with pytest.raises(DataVersionError, match=r"hash to .* but data.dvc pins f{32}\.dir"):
        ensure_data(dataset, tmp_path / "data", dvc_file)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.dvc"]


def test_present_data_matching_the_pin_is_accepted_as_is(
    written: Path, tmp_path: Path, dataset: Dataset
) -> None:
    shutil.copytree(written, tmp_path / "data")
    dvc_file = _pin(tmp_path, directory_md5(written))
    assert ensure_data(dataset, tmp_path / "data", dvc_file).how == "present"
