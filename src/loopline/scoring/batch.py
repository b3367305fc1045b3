"""Batch scoring: a Parquet file of records in, the same rows with their scores out.

Reads the input in row groups of `chunk_rows` (constant memory), scores each with a
compiled scorer on all cores, and writes the input columns plus `probability`, `label`,
`model_name` and `model_version` to a temporary file that replaces the target only when
every row is done: an interrupted run leaves the previous output (or none), never half.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from loopline.core.errors import DataContractError
from loopline.core.io import atomic_path
from loopline.scoring.registered import LoadedModel

CHUNK_ROWS = 262_144


@dataclass(frozen=True)
class BatchResult:
    """What one batch-scoring run did."""

    rows: int
    seconds: float
    model_version: str
    target: Path

    @property
    def rows_per_s(self) -> float:
        """Throughput, input read and output written included."""
        return self.rows / self.seconds if self.seconds else float("inf")


def check_nulls(table: pa.Table | pa.RecordBatch, required: set[str]) -> None:
    """DataContractError naming the required columns that hold a null."""
    nulls = sorted(name for name in required if table.column(name).null_count)
    if nulls:
        raise DataContractError(f"required columns with null values: {nulls}")


def check_schema(schema: pa.Schema, fields: dict[str, str], required: set[str]) -> None:
    """Every required field present and of a usable type; errors name the columns."""
    missing = sorted(required - set(schema.names))
    if missing:
        raise DataContractError(f"input lacks required columns {missing}")
    wrong = []
    for name, dtype in fields.items():
        if name not in schema.names:
            continue
        kind = schema.field(name).type
        numeric = pa.types.is_integer(kind) or pa.types.is_floating(kind)
        if dtype in {"int", "float"} and not numeric:
            wrong.append(f"{name} is {kind}, expected a number")
        if dtype == "string" and not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
            wrong.append(f"{name} is {kind}, expected text")
    if wrong:
        raise DataContractError("input column types: " + "; ".join(wrong))


def score_file(
    model: LoadedModel,
    source: Path,
    target: Path,
    required: set[str],
    *,
    chunk_rows: int = CHUNK_ROWS,
    progress: bool = True,
) -> BatchResult:
    """Score every row of `source` into `target` (Parquet, zstd); see the module docstring.

    `required` names the record fields that may not be absent or null.
    """
    if not source.is_file():
        raise DataContractError(f"{source} does not exist")
    started = time.perf_counter()
    scorer = model.scorer
    parquet = pq.ParquetFile(source)
    check_schema(parquet.schema_arrow, scorer.record_fields, required)
    total = parquet.metadata.num_rows
    bar = Progress(
        TextColumn("scoring"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
        disable=not progress,
    )  # fmt: skip
    with atomic_path(target) as tmp, bar, contextlib.ExitStack() as open_files:
        task = bar.add_task("rows", total=total)
        writer = None
        for batch in parquet.iter_batches(batch_size=chunk_rows):
            table = pa.Table.from_batches([batch])
            check_nulls(table, required)
            probability = scorer.score_arrow(table)
            scored = table.append_column("probability", pa.array(probability))
            scored = scored.append_column("label", pa.array(scorer.labels(probability)))
            rows = table.num_rows
            scored = scored.append_column("model_name", pa.array(np.full(rows, model.name)))
            scored = scored.append_column("model_version", pa.array(np.full(rows, model.version)))
            if writer is None:  # closed on the way out, on error too
                writer = open_files.enter_context(
                    pq.ParquetWriter(tmp, scored.schema, compression="zstd")
                )
            writer.write_table(scored)
            bar.advance(task, rows)
        if writer is None:
            raise DataContractError(f"{source} holds no rows")
    return BatchResult(total, time.perf_counter() - started, model.version, target)
