"""What every dataset plugged into Loopline provides, and the generic table I/O.

A dataset is one module defining a `Dataset` subclass: its data contract, how its raw
tables are produced offline, how they join into examples (record, event time if it has
one, target), which features the shared featurizer builds, its own settings and the words
the shared code uses for its records and target. Nothing outside that module knows table
or column names.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, ValidationError

from loopline.core.errors import ConfigError, DataContractError
from loopline.core.io import atomic_path, shown
from loopline.core.params import DatasetParams, FeaturizeParams
from loopline.data.columns import Columns
from loopline.data.contract import DataContract


@dataclass(frozen=True)
class Lookup:
    """Attributes joined from a static reference table by key (a plane by its tail number).

    The reference rows are captured when the featurizer is fitted, so serving needs no
    access to the raw tables.
    """

    table: str
    key: str
    ref_key: str
    columns: tuple[str, ...]
    prefix: str


@dataclass(frozen=True)
class FeatureSpec:
    """The dataset-specific half of feature engineering, consumed by `loopline.scoring.features`.

    `derive` is stateless and row-wise (one row's features never depend on another row):
    it takes the record columns after lookups (name -> 1-D array, see `loopline.data.columns`)
    and returns the derived columns. `history` lists column groups whose positive rate in
    the training split becomes a feature. Categorical columns hold text. `dataset` and
    `settings` name how to rebuild this spec (`get_dataset(dataset).feature_spec(...)`),
    so saved feature tables need no pickled code.
    """

    derive: Callable[[Columns], Columns]
    numeric: tuple[str, ...]
    categorical: tuple[str, ...]
    history: tuple[tuple[str, ...], ...] = ()
    lookups: tuple[Lookup, ...] = field(default=())
    dataset: str = ""
    settings: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Wording:
    """The words the shared code (service, cards, dashboards, reports) uses for a dataset."""

    record: str  # one example, singular: "flight", "customer"
    target: str  # what the model predicts, as a noun: "late arrival", "churn"
    definition: str  # one sentence: when an example is positive
    positive: str  # the label of class 1 ("late", "churned"): an identifier
    negative: str  # the label of class 0 ("on_time", "stayed"): an identifier
    intended_use: str  # the model card's "Intended use"
    limitations: str  # the model card's "Limitations"


class NoSettings(BaseModel):
    """For a dataset without settings of its own: `dataset.settings` must be empty."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class Dataset(ABC):
    """A tabular dataset: contract, offline source, joins, target, time and features.

    `time_column` is None for a dataset without event time: its time axis is then by
    arrival (`loopline.data.time_axis`), which decides everything that follows from it.
    """

    name: ClassVar[str]
    contract: ClassVar[DataContract]
    time_column: ClassVar[str | None] = None
    target_column: ClassVar[str]
    slice_columns: ClassVar[tuple[str, ...]]
    key_columns: ClassVar[tuple[str, ...]]  # record fields that identify one example
    wording: ClassVar[Wording]
    settings_model: ClassVar[type[BaseModel]] = NoSettings  # `dataset.settings` in params

    @property
    def record_type_name(self) -> str:
        """The name of one prediction input in the API schema: `FlightRecord`."""
        return f"{self.wording.record.title().replace(' ', '')}Record"

    def settings(self, params: DatasetParams) -> Any:
        """`dataset.settings` validated by this dataset's `settings_model`."""
        try:
            return self.settings_model.model_validate(params.settings)
        except ValidationError as error:
            first = error.errors()[0]
            where = ".".join(str(part) for part in first["loc"])
            raise ConfigError(
                f"dataset.settings.{where}: {first['msg']} (dataset {self.name!r})"
            ) from None

    @abstractmethod
    def materialize(self) -> dict[str, pd.DataFrame]:
        """Produce the raw tables from the offline source, exactly as the contract declares."""

    @abstractmethod
    def build_examples(
        self, tables: Mapping[str, pd.DataFrame], params: DatasetParams
    ) -> pd.DataFrame:
        """Join raw tables into one row per example: record fields, time column, target."""

    @abstractmethod
    def feature_spec(self, featurize: FeaturizeParams, params: DatasetParams) -> FeatureSpec:
        """The features the shared featurizer builds for this dataset.

        The spec's `settings` must be `spec_settings(featurize, params)`: what rebuilds it.
        """

    def event_time(self, columns: Columns) -> np.ndarray:
        """The time column (datetime64) computed from record columns (`loopline.data.columns`)."""
        raise DataContractError(f"dataset {self.name!r} has no time column")

    def record_columns(self) -> list[str]:
        """Names of the fields a prediction request carries."""
        return [f.name for f in self.contract.record_fields()]

    def record_fields(self) -> dict[str, str]:
        """The fields a prediction request carries, with their contract dtype."""
        return {f.name: f.dtype for f in self.contract.record_fields()}


def spec_settings(featurize: FeaturizeParams, params: DatasetParams) -> dict[str, Any]:
    """What a saved featurizer records to rebuild its spec (`FeatureSpec.settings`)."""
    return {
        "featurize": featurize.model_dump(mode="json"),
        "dataset": params.model_dump(mode="json"),
    }


def write_tables(tables: Mapping[str, pd.DataFrame], out_dir: Path) -> None:
    """Write each table as `<name>.parquet`, byte-for-byte reproducible.

    Pandas metadata (which records the pandas version) is dropped and the writer options
    are fixed, so the bytes depend only on the data and the pinned pyarrow version.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, frame in tables.items():
        table = pa.Table.from_pandas(frame, preserve_index=False).replace_schema_metadata(None)
        with atomic_path(out_dir / f"{name}.parquet") as tmp:
            pq.write_table(table, tmp, compression="zstd", compression_level=9)


PARQUET_MAGIC = b"PAR1"  # the first and last four bytes of every Parquet file


def read_tables(data_dir: Path, contract: DataContract) -> dict[str, pd.DataFrame]:
    """Read every contract table from `data_dir`.

    A table that cannot be read stops everything with one line naming the table, the
    path and what is wrong (missing, empty, not Parquet, cut short, unreadable), instead
    of a reader's traceback.
    """
    return {name: read_table(name, data_dir / f"{name}.parquet") for name in contract.table_names()}


def read_table(name: str, path: Path) -> pd.DataFrame:
    """One contract table from its Parquet file; DataContractError says what is wrong."""

    def unreadable(problem: str) -> DataContractError:
        return DataContractError(
            f"table {name!r} at {shown(path)}: {problem}. Run `loopline data` to restore the "
            "pinned raw data, or replace the file with a valid Parquet table."
        )

    if not path.is_file():
        raise unreadable("the file does not exist")
    size = path.stat().st_size
    if size == 0:
        raise unreadable("the file is empty (0 bytes)")
    with path.open("rb") as handle:
        head = handle.read(4)
        handle.seek(max(size - 4, 0))
        tail = handle.read(4)
    if head != PARQUET_MAGIC:
        raise unreadable(f"not a Parquet file (it starts with {head!r}, Parquet with b'PAR1')")
    if tail != PARQUET_MAGIC or size < 12:
        raise unreadable(f"the Parquet file is cut short ({size} bytes, no closing footer)")
    try:
        return pd.read_parquet(path)
    except (OSError, ValueError, pa.ArrowException) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise unreadable(f"the Parquet file is damaged ({reason})") from None
