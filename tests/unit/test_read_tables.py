"""Unreadable raw tables stop with one line naming the table, the path and the problem."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from loopline.core.errors import DataContractError
from loopline.data.datasets.base import read_tables, write_tables

TABLES = {
    "flights": pd.DataFrame({"carrier": ["UA", "AA"] * 500, "distance": range(1000)}),
    "airlines": pd.DataFrame({"carrier": ["UA", "AA"], "name": ["United", "American"]}),
}


class _Contract:
    """The one thing `read_tables` asks of a contract: its table names."""

    def table_names(self) -> tuple[str, ...]:
        return tuple(TABLES)


def _written(tmp_path: Path) -> Path:
    write_tables(TABLES, tmp_path)
    return tmp_path


def _zero_bytes(path: Path) -> None:
    path.write_bytes(b"")


def _cut_short(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _csv_named_parquet(path: Path) -> None:
    path.write_text("carrier,name\nUA,United\n")


def _damaged_inside(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[4:40] = b"\xff" * 36  # the first column chunk, between intact magic bytes
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    ("damage", "problem"),
    [
        (Path.unlink, "the file does not exist"),
        (_zero_bytes, "the file is empty (0 bytes)"),
        (_cut_short, "the Parquet file is cut short"),
        (_csv_named_parquet, "not a Parquet file (it starts with b'carr'"),
        (_damaged_inside, "the Parquet file is damaged"),
    ],
)
def test_an_unreadable_table_is_named_in_one_line(
    damage: object, problem: str, tmp_path: Path
) -> None:
    data = _written(tmp_path)
    damage(data / "flights.parquet")  # type: ignore[operator]
    with pytest.raises(DataContractError) as caught:
        read_tables(data, _Contract())  # type: ignore[arg-type]
    message = str(caught.value)
    assert message.startswith(f"table 'flights' at {data / 'flights.parquet'}: {problem}")
    assert "\n" not in message
    assert "loopline data" in message  # what to do about it


def test_intact_tables_read_back_equal(tmp_path: Path) -> None:
    tables = read_tables(_written(tmp_path), _Contract())  # type: ignore[arg-type]
    for name, frame in TABLES.items():
        pd.testing.assert_frame_equal(tables[name], frame)
