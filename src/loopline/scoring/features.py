"""The features: one implementation, fitted at training, applied everywhere a model scores.

`loopline.training.featurize.fit_featurizer` learns `FeatureTables` from the training split:
plane attributes by tail number, history rates (positive rate per route, carrier...),
category vocabularies, clip bounds, medians and scales. They are plain tables and arrays,
saved as one JSON file: the featurize stage writes it, every model version carries it, and
serving reads it without unpickling anything.

`FeatureTables.transform_columns` is the one implementation of the features: training
calls it through `transform` (a pandas frame in and out), serving and batch scoring call
it directly on column arrays. Its output is one float32 array: numeric columns (clipped,
imputed, standardised, plus a `__missing` flag where training data had gaps) followed by
categorical columns as integer codes (0 = unknown or rare, 1..K = categories seen at
least `min_category_count` times in training). Every row is transformed on its own, so a
record gets the same features alone or inside any batch.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from loopline.core.errors import DataContractError
from loopline.core.io import atomic_path
from loopline.core.params import DatasetParams, FeaturizeParams
from loopline.data import columns as cols
from loopline.data.datasets.base import FeatureSpec, Lookup

log = logging.getLogger(__name__)

UNKNOWN_CODE = 0
HISTORY_PREFIX = "history_rate__"
MISSING_SUFFIX = "__missing"
KEY_SEPARATOR = "|"
TABLES_FILE = "featurizer.json"
TABLES_FORMAT = 2  # 2: the spec is rebuilt from featurize and dataset settings


def history_feature_name(group: tuple[str, ...]) -> str:
    """Output column name of the history rate for a column group."""
    return HISTORY_PREFIX + "_".join(group)


def _as_json_values(values: np.ndarray) -> list:
    """Plain JSON values: NaN and None become null, NumPy scalars Python ones."""
    return [None if cols.is_missing(v) else (v.item() if hasattr(v, "item") else v) for v in values]


def _from_json_values(values: list, numeric: bool) -> np.ndarray:
    if numeric:
        return np.array([np.nan if v is None else v for v in values], dtype="float64")
    array = np.empty(len(values), dtype=object)
    array[:] = values
    return array


@dataclass(frozen=True)
class LookupTable:
    """A reference table's attributes by key, with a trailing all-missing row for misses."""

    key: str
    keys: list[str]
    attributes: dict[str, np.ndarray]  # output column -> values, len(keys) + 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "index", cols.TextIndex(self.keys))

    def apply(self, columns: cols.Columns) -> cols.Columns:
        """The attributes of each row's key (missing where the key is unknown)."""
        rows = self.index.positions(columns[self.key])
        return {name: values[rows] for name, values in self.attributes.items()}

    @classmethod
    def capture(cls, lookup: Lookup, reference: pd.DataFrame) -> LookupTable:
        """Keep the reference rows a lookup needs (first row per key)."""
        rows = reference.drop_duplicates(lookup.ref_key)
        attributes = {}
        for column in lookup.columns:
            values = rows[column]
            if pd.api.types.is_numeric_dtype(values):
                array = values.to_numpy(dtype="float64", na_value=np.nan)
                attributes[lookup.prefix + column] = np.append(array, np.nan)
            else:
                array = values.astype(object).where(values.notna(), None).to_numpy(dtype=object)
                attributes[lookup.prefix + column] = np.append(array, None)
        return cls(lookup.key, rows[lookup.ref_key].astype(str).tolist(), attributes)

    def to_json(self) -> dict:
        """Plain-JSON form (columns of values, null = missing)."""
        return {
            "key": self.key,
            "keys": self.keys,
            "numeric": [n for n, v in self.attributes.items() if v.dtype != object],
            "attributes": {n: _as_json_values(v[:-1]) for n, v in self.attributes.items()},
        }

    @classmethod
    def from_json(cls, data: dict) -> LookupTable:
        """Inverse of `to_json`."""
        numeric = set(data["numeric"])
        attributes = {
            name: _from_json_values([*values, None], name in numeric)
            for name, values in data["attributes"].items()
        }
        return cls(data["key"], list(data["keys"]), attributes)


@dataclass(frozen=True)
class HistoryTable:
    """Smoothed positive rate per value of a column group; unseen groups get the prior."""

    group: tuple[str, ...]
    keys: list[str]
    rates: np.ndarray  # len(keys) + 1: the last slot holds the prior

    def __post_init__(self) -> None:
        object.__setattr__(self, "index", cols.TextIndex(self.keys))

    def apply(self, columns: cols.Columns) -> np.ndarray:
        """Each row's rate (float64)."""
        return self.rates[self.index.positions(group_keys(columns, self.group))]

    def rate(self, *values: str) -> float:
        """The rate of one group value, e.g. `rate("UA")` or `rate("UA", "EWR-IAH")`."""
        key = np.array([KEY_SEPARATOR.join(values)], dtype=object)
        return float(self.rates[self.index.positions(key)][0])


def prepare(columns: cols.Columns, lookups: list[LookupTable], spec: FeatureSpec) -> cols.Columns:
    """Record columns plus looked-up attributes and the dataset's derived columns."""
    frame = dict(columns)
    for table in lookups:
        frame.update(table.apply(frame))
    frame.update(spec.derive(frame))
    return frame


def group_keys(columns: cols.Columns, group: tuple[str, ...]) -> np.ndarray:
    """One string per row joining the group's values, e.g. "UA|EWR-IAH"."""
    if len(group) == 1:
        return columns[group[0]]
    return cols.join_text([columns[c] for c in group], KEY_SEPARATOR)


@dataclass(frozen=True)
class FeatureTables:
    """Everything the features learn from the training window, as plain tables.

    `spec` is rebuilt from the dataset module by name (its `derive` is code, not data);
    the rest is data and round-trips through JSON exactly.
    """

    spec: FeatureSpec
    record_fields: dict[str, str]  # name -> "int" | "float" | "string"
    lookups: list[LookupTable]
    history: list[HistoryTable]
    vocabularies: dict[str, list[str]]
    numeric_inputs: list[str]  # spec numerics, then history rates
    clip_low: np.ndarray
    clip_high: np.ndarray
    medians: np.ndarray
    means: np.ndarray
    scales: np.ndarray
    missing_flags: list[str]

    def __post_init__(self) -> None:
        indexes = {c: cols.TextIndex(v) for c, v in self.vocabularies.items()}
        codes = {
            c: np.append(np.arange(1, len(v) + 1), UNKNOWN_CODE)
            for c, v in self.vocabularies.items()
        }
        flagged = [self.numeric_inputs.index(c) for c in self.missing_flags]
        object.__setattr__(self, "_indexes", indexes)
        object.__setattr__(self, "_codes", codes)
        object.__setattr__(self, "_flagged", flagged)

    # -- what comes out ----------------------------------------------------------------------

    @property
    def numeric_features(self) -> list[str]:
        """Numeric output columns: scaled inputs, then missing flags."""
        return [*self.numeric_inputs, *(c + MISSING_SUFFIX for c in self.missing_flags)]

    @property
    def categorical_features(self) -> list[str]:
        """Integer-coded output columns."""
        return list(self.vocabularies)

    @property
    def feature_names(self) -> list[str]:
        """All output columns, numeric first."""
        return [*self.numeric_features, *self.categorical_features]

    @property
    def cardinalities(self) -> dict[str, int]:
        """Codes per categorical column, the unknown code included."""
        return {c: len(v) + 1 for c, v in self.vocabularies.items()}

    def history_table(self, *group: str) -> HistoryTable:
        """The history rates of one column group."""
        return next(h for h in self.history if h.group == group)

    # -- transforming ------------------------------------------------------------------------

    def transform_columns(self, columns: cols.Columns) -> np.ndarray:
        """Model-ready float32 array (rows, features) from record columns."""
        frame = self.prepare(columns)
        rows = len(next(iter(columns.values())))
        inputs = np.empty((rows, len(self.numeric_inputs)), dtype="float64")
        named = len(self.spec.numeric)
        for j, name in enumerate(self.spec.numeric):
            inputs[:, j] = frame[name]
        for j, table in enumerate(self.history, start=named):
            inputs[:, j] = table.apply(frame)
        missing = np.isnan(inputs)
        filled = np.where(missing, self.medians, np.clip(inputs, self.clip_low, self.clip_high))
        out = np.empty((rows, len(self.feature_names)), dtype="float32")
        numeric = len(self.numeric_inputs)
        out[:, :numeric] = (filled - self.means) / self.scales
        flags = numeric + len(self._flagged)
        out[:, numeric:flags] = missing[:, self._flagged]
        for j, column in enumerate(self.vocabularies, start=flags):
            out[:, j] = self._codes[column][self._indexes[column].positions(frame[column])]
        return out

    def prepare(self, columns: cols.Columns) -> cols.Columns:
        """Record columns plus looked-up attributes and the dataset's derived columns."""
        return prepare(columns, self.lookups, self.spec)

    def transform(self, records: pd.DataFrame) -> pd.DataFrame:
        """`transform_columns` on a frame: numeric columns float32, codes int32, same index."""
        values = self.transform_columns(cols.from_frame(records, self.record_fields))
        split = len(self.numeric_features)
        numeric = pd.DataFrame(
            values[:, :split], index=records.index, columns=self.numeric_features
        )
        codes = pd.DataFrame(
            values[:, split:].astype("int32"),
            index=records.index,
            columns=self.categorical_features,
        )
        return pd.concat([numeric, codes], axis=1)

    # -- saving ------------------------------------------------------------------------------

    def to_json(self) -> dict:
        """Plain-JSON form; `from_json` restores an equal object."""
        return {
            "format": TABLES_FORMAT,
            "dataset": self.spec.dataset,
            "settings": dict(self.spec.settings),
            "record_fields": self.record_fields,
            "lookups": [table.to_json() for table in self.lookups],
            "history": [
                {
                    "group": list(h.group),
                    "keys": h.keys,
                    "rates": h.rates[:-1].tolist(),
                    "prior": float(h.rates[-1]),
                }
                for h in self.history
            ],
            "categorical": list(self.vocabularies),  # output order (JSON objects are unordered)
            "vocabularies": self.vocabularies,
            "numeric_inputs": self.numeric_inputs,
            "clip_low": _as_json_values(self.clip_low),
            "clip_high": _as_json_values(self.clip_high),
            "medians": self.medians.tolist(),
            "means": self.means.tolist(),
            "scales": self.scales.tolist(),
            "missing_flags": self.missing_flags,
        }

    @classmethod
    def from_json(cls, data: dict) -> FeatureTables:
        """Rebuild tables from `to_json` output (the spec from the named dataset module)."""
        from loopline.data.datasets import get_dataset  # noqa: PLC0415 - the registry imports datasets

        if data.get("format") != TABLES_FORMAT:
            raise DataContractError(
                f"featurizer tables format {data.get('format')!r} is not {TABLES_FORMAT}: "
                "re-run the featurize stage with this version of Loopline"
            )
        settings = data["settings"]
        spec = get_dataset(data["dataset"]).feature_spec(
            FeaturizeParams.model_validate(settings["featurize"]),
            DatasetParams.model_validate(settings["dataset"]),
        )

        def bounds(values: list, missing: float) -> np.ndarray:
            return np.array([missing if v is None else v for v in values], dtype="float64")

        return cls(
            spec=spec,
            record_fields=dict(data["record_fields"]),
            lookups=[LookupTable.from_json(t) for t in data["lookups"]],
            history=[
                HistoryTable(
                    tuple(h["group"]),
                    list(h["keys"]),
                    np.array([*h["rates"], h["prior"]], dtype="float64"),
                )
                for h in data["history"]
            ],
            vocabularies={c: list(data["vocabularies"][c]) for c in data["categorical"]},
            numeric_inputs=list(data["numeric_inputs"]),
            clip_low=bounds(data["clip_low"], -np.inf),
            clip_high=bounds(data["clip_high"], np.inf),
            medians=np.array(data["medians"], dtype="float64"),
            means=np.array(data["means"], dtype="float64"),
            scales=np.array(data["scales"], dtype="float64"),
            missing_flags=list(data["missing_flags"]),
        )

    def write(self, target: Path) -> None:
        """Save as JSON (atomically)."""
        with atomic_path(target) as tmp:
            tmp.write_text(json.dumps(self.to_json(), sort_keys=True))

    @classmethod
    def read(cls, source: Path) -> FeatureTables:
        """Load tables saved by `write`."""
        return cls.from_json(json.loads(source.read_text()))
