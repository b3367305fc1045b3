"""Records as column arrays, and the two string operations features need on them.

Features are computed on a plain mapping of column name -> 1-D NumPy array ("columns"):
integers as int64, floats as float64 (NaN = missing), text as object arrays (None =
missing). The same columns come from validated API records, a pandas frame (training) or
an Arrow table (batch scoring), so every path runs one feature implementation.

Text lookups and joins have two exact implementations of the same rule: a Python loop
for a handful of rows (an API call, where per-call overhead dominates) and Arrow's
vectorized kernels for large batches. `SMALL` is the row count where they switch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from loopline.core.errors import DataContractError

Columns = dict[str, np.ndarray]
SMALL = 256  # rows; below this Python loops beat Arrow's per-call cost
NUMERIC_DTYPES = {"int": "int64", "float": "float64"}


def is_missing(value: object) -> bool:
    """True for None and NaN (NaN is the one value that is not equal to itself)."""
    return value is None or value != value  # noqa: PLR0124


def from_records(records: Sequence[Mapping[str, Any]], fields: Mapping[str, str]) -> Columns:
    """Columns of `fields` ({name: "int" | "float" | "string"}) from dict records.

    A field absent from a record, or None, is missing. Integers must be present. One
    array is built per dtype (then split into columns), so the cost per call is a few
    NumPy calls whatever the number of fields.
    """
    columns: Columns = {}
    for dtype, numpy_dtype in (("float", "float64"), ("int", "int64"), ("string", object)):
        names = [name for name, kind in fields.items() if kind == dtype]
        if not names:
            continue
        table = np.array([[r.get(n) for n in names] for r in records], dtype=numpy_dtype)
        table = table.reshape(len(records), len(names))
        columns.update({name: table[:, j] for j, name in enumerate(names)})
    return columns


def from_frame(frame: pd.DataFrame, fields: Mapping[str, str]) -> Columns:
    """Columns of `fields` from a pandas frame; an absent optional column is all missing."""
    columns: Columns = {}
    for name, dtype in fields.items():
        if name not in frame:
            columns[name] = _absent(name, len(frame), dtype)
        elif dtype == "float":
            columns[name] = frame[name].to_numpy(dtype="float64", na_value=np.nan)
        elif dtype == "int":
            columns[name] = frame[name].to_numpy(dtype="int64")
        else:
            column = frame[name].astype(object)
            columns[name] = column.where(column.notna(), None).to_numpy(dtype=object)
    return columns


def from_arrow(table: pa.Table, fields: Mapping[str, str]) -> Columns:
    """Columns of `fields` from an Arrow table (a Parquet file read by pyarrow)."""
    columns: Columns = {}
    for name, dtype in fields.items():
        if name not in table.column_names:
            columns[name] = _absent(name, table.num_rows, dtype)
            continue
        column = table.column(name)
        if dtype == "int" and column.null_count:
            raise DataContractError(f"{name}: {column.null_count} null values in an integer field")
        if dtype in NUMERIC_DTYPES:
            column = column.cast(pa.float64()) if column.null_count else column
            columns[name] = column.to_numpy().astype(NUMERIC_DTYPES[dtype])
        else:
            columns[name] = column.to_numpy(zero_copy_only=False).astype(object)
    return columns


def _absent(name: str, rows: int, dtype: str) -> np.ndarray:
    if dtype == "float":
        return np.full(rows, np.nan)
    if dtype == "int":
        raise DataContractError(f"{name}: the input has no such column (an integer field)")
    return np.full(rows, None, dtype=object)


def join_text(parts: Sequence[np.ndarray], separator: str) -> np.ndarray:
    """Row-wise `separator.join(parts)`; None where any part is missing."""
    rows = len(parts[0])
    if rows >= SMALL:
        arrays = [pa.array(part, type=pa.string(), from_pandas=True) for part in parts]
        joined = pc.binary_join_element_wise(*arrays, separator)
        return joined.to_numpy(zero_copy_only=False).astype(object)
    out = np.empty(rows, dtype=object)
    for row, values in enumerate(zip(*parts, strict=True)):
        out[row] = None if any(map(is_missing, values)) else separator.join(values)
    return out


class TextIndex:
    """Position of each known string, built once; unknown or missing -> `len(keys)`.

    Index arrays built from it carry one extra slot at the end for "not found", so a
    lookup is `values_with_default[index.positions(column)]`.
    """

    def __init__(self, keys: Sequence[str]) -> None:
        self.keys = list(keys)
        self.not_found = len(self.keys)
        self._positions = {key: position for position, key in enumerate(self.keys)}
        self._arrow_keys = pa.array(self.keys, type=pa.string())

    def positions(self, values: np.ndarray) -> np.ndarray:
        """int64 position of every value (`not_found` for unknown or missing)."""
        if len(values) >= SMALL:
            found = pc.index_in(
                pa.array(values, type=pa.string(), from_pandas=True), value_set=self._arrow_keys
            )
            return found.fill_null(self.not_found).to_numpy().astype("int64")
        get, default = self._positions.get, self.not_found
        return np.fromiter(
            (default if is_missing(v) else get(v, default) for v in values),
            dtype="int64",
            count=len(values),
        )
