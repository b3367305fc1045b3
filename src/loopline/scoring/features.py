"""Feature engineering shared by training and serving, and the train/valid/test split.

`fit_featurizer` learns `FeatureTables` from the training window: plane attributes by tail
number, history rates (positive rate per route, carrier...), category vocabularies, clip
bounds, medians and scales. They are plain tables and arrays, saved as one JSON file:
the featurize stage writes it, every model version carries it, and serving reads it
without unpickling anything.

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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from loopline.core.errors import ConfigError, DataContractError
from loopline.core.io import atomic_path, write_parquet
from loopline.core.params import (
    DatasetParams,
    DateWindow,
    FeaturizeParams,
    FractionSplit,
    KeyedSplit,
    Params,
)
from loopline.data import columns as cols
from loopline.data.datasets.base import Dataset, FeatureSpec, Lookup

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


# -- fitting -----------------------------------------------------------------------------------


def fit_featurizer(
    train: pd.DataFrame,
    *,
    dataset: Dataset,
    tables: Mapping[str, pd.DataFrame],
    params: Params,
) -> FeatureTables:
    """Learn the feature tables from the training split only.

    `tables` are the raw tables; the spec's lookups capture the reference tables they name.

    History rates are m-estimates: each group's positive rate pulled toward the overall rate by
    `history_smoothing` pseudo-rows, so rare routes do not get extreme rates. Categories
    rarer than `min_category_count` share the unknown code. Numeric values are clipped to
    the `clip_quantiles` of training.
    """
    if len(train) == 0:
        raise DataContractError("cannot fit features on an empty training window")
    spec = dataset.feature_spec(params.featurize, params.dataset)
    fields = dataset.record_fields()
    target = train[dataset.target_column].to_numpy(dtype="float64")
    lookups = []
    for lookup in spec.lookups:
        if lookup.table not in tables:
            raise DataContractError(f"lookup table {lookup.table!r} was not provided")
        lookups.append(LookupTable.capture(lookup, tables[lookup.table]))
    frame = prepare(cols.from_frame(train, fields), lookups, spec)
    settings = params.featurize
    prior = float(target.mean())
    history = [
        _fit_history(group_keys(frame, group), target, group, prior, settings.history_smoothing)
        for group in spec.history
    ]
    vocabularies = {
        column: _fit_vocabulary(frame[column], settings.min_category_count)
        for column in spec.categorical
    }
    numeric_inputs = [*spec.numeric, *(history_feature_name(g) for g in spec.history)]
    inputs = pd.DataFrame(
        {name: np.asarray(frame[name], dtype="float64") for name in spec.numeric}
        | {history_feature_name(h.group): h.apply(frame) for h in history}
    )
    low_q, high_q = settings.clip_quantiles
    clip_low, clip_high = inputs.quantile(low_q), inputs.quantile(high_q)
    clipped = inputs.clip(clip_low, clip_high, axis=1)
    medians = clipped.median().fillna(0.0)
    filled = clipped.fillna(medians)
    return FeatureTables(
        spec=spec,
        record_fields=fields,
        lookups=lookups,
        history=history,
        vocabularies=vocabularies,
        numeric_inputs=numeric_inputs,
        clip_low=clip_low.fillna(-np.inf).to_numpy(),
        clip_high=clip_high.fillna(np.inf).to_numpy(),
        medians=medians.to_numpy(),
        means=filled.mean().to_numpy(),
        scales=filled.std(ddof=0).replace(0.0, 1.0).fillna(1.0).to_numpy(),
        missing_flags=[c for c in numeric_inputs if inputs[c].isna().any()],
    )


def _fit_history(
    keys: np.ndarray, target: np.ndarray, group: tuple[str, ...], prior: float, m: float
) -> HistoryTable:
    stats = pd.Series(target).groupby(pd.Series(keys, dtype=object)).agg(["sum", "count"])
    rates = (stats["sum"] + m * prior) / (stats["count"] + m)
    return HistoryTable(group, [str(k) for k in rates.index], np.append(rates.to_numpy(), prior))


def _fit_vocabulary(values: np.ndarray, min_count: int) -> list[str]:
    counts = pd.Series(values, dtype=object).dropna().astype(str).value_counts()
    return sorted(counts[counts >= min_count].index)


# -- splitting and writing -----------------------------------------------------------------------


def build_feature_sets(
    tables: Mapping[str, pd.DataFrame], dataset: Dataset, params: Params
) -> tuple[dict[str, pd.DataFrame], FeatureTables]:
    """Examples from the raw tables, split, and the featurizer fitted on the train split."""
    splits = split_examples(dataset.build_examples(tables, params.dataset), dataset, params)
    featurizer = fit_featurizer(splits["train"], dataset=dataset, tables=tables, params=params)
    return splits, featurizer


def split_examples(
    examples: pd.DataFrame, dataset: Dataset, params: Params
) -> dict[str, pd.DataFrame]:
    """Train, valid and test examples, as `featurize.split` says.

    Date windows need a dataset with a time column; fractions work for any dataset and are
    what a dataset without one gets; a split by key is what a retrain by arrival writes.
    """
    split = params.featurize.split
    if isinstance(split, FractionSplit):
        return split_at_random(examples, dataset.target_column, split, params.seed)
    if isinstance(split, KeyedSplit):
        return split_by_key(examples, dataset.key_columns, split.keys_file)
    if dataset.time_column is None:
        raise ConfigError(
            f"featurize.split gives date windows, but dataset {dataset.name!r} has no time "
            "column: give fractions instead, e.g. {train: 0.6, valid: 0.2, test: 0.2}"
        )
    return split_by_time(examples, dataset.time_column, split.windows())


def stratified_parts(
    examples: pd.DataFrame, target_column: str, fractions: Mapping[str, float], seed: int
) -> np.ndarray:
    """Each row's part name (None: in no part), seeded and stratified by the target.

    Within each class the rows are shuffled once with `seed` and cut at the cumulative
    fractions, so the same seed and data always give the same parts.
    """
    labels = examples[target_column].to_numpy()
    generator = np.random.default_rng(seed)
    assigned = np.full(len(examples), None, dtype=object)
    for label in np.unique(labels):
        rows = generator.permutation(np.flatnonzero(labels == label))
        edges = np.round(np.cumsum(list(fractions.values())) * len(rows)).astype(int)
        for name, part in zip(fractions, np.split(rows, edges)[:-1], strict=True):
            assigned[part] = name
    return assigned


def split_at_random(
    examples: pd.DataFrame, target_column: str, split: FractionSplit, seed: int
) -> dict[str, pd.DataFrame]:
    """A seeded split stratified by the target: each split keeps the positive rate.

    Every row lands in at most one split (none: the rest, when the fractions add up to
    less than 1), and each split keeps the rows' original order.
    """
    fractions = split.fractions()
    assigned = stratified_parts(examples, target_column, fractions, seed)
    splits = {name: examples[assigned == name].reset_index(drop=True) for name in fractions}
    for name, frame in splits.items():
        if frame[target_column].nunique() < 2:
            raise ConfigError(
                f"split {name!r} ({fractions[name]:g} of {len(examples)} examples) does not "
                "hold both classes: raise its fraction in featurize.split"
            )
    return splits


def left_out(
    examples: pd.DataFrame, target_column: str, split: FractionSplit, seed: int
) -> pd.DataFrame:
    """The examples a split by fractions keeps out of all three: future traffic."""
    assigned = stratified_parts(examples, target_column, split.fractions(), seed)
    return examples[pd.isna(assigned)].reset_index(drop=True)


def split_by_key(
    examples: pd.DataFrame, key_columns: Sequence[str], keys_file: Path
) -> dict[str, pd.DataFrame]:
    """Train, valid and test examples as a file of keys assigns them (others left out)."""
    if not keys_file.is_file():
        raise ConfigError(f"featurize.split.keys_file: {keys_file} not found")
    keys = pd.read_parquet(keys_file)
    missing = [c for c in (*key_columns, "split") if c not in keys]
    if missing:
        raise ConfigError(f"featurize.split.keys_file: {keys_file} lacks the columns {missing}")
    if keys.duplicated(list(key_columns)).any():
        raise ConfigError(f"featurize.split.keys_file: {keys_file} names a key twice")
    placed = examples.merge(keys[[*key_columns, "split"]], on=list(key_columns), how="left")
    splits = {}
    for name in ("train", "valid", "test"):
        splits[name] = placed[placed["split"] == name].drop(columns="split").reset_index(drop=True)
        if splits[name].empty:
            raise ConfigError(f"featurize.split.keys_file: {keys_file} puts no example in {name!r}")
    return splits


def split_by_time(
    examples: pd.DataFrame, time_column: str, windows: Mapping[str, DateWindow]
) -> dict[str, pd.DataFrame]:
    """Assign each example to the window containing its date; rows outside all are dropped.

    Windows are whole days, inclusive at both ends. An empty window is a configuration
    error, reported with the date range the data actually covers.
    """
    days = examples[time_column].dt.normalize()
    splits = {}
    for name, window in windows.items():
        inside = days.between(pd.Timestamp(window.start), pd.Timestamp(window.end))
        splits[name] = examples[inside].reset_index(drop=True)
        if splits[name].empty:
            raise ConfigError(
                f"split {name!r} ({window}) has no rows; the data covers "
                f"{days.min():%Y-%m-%d}..{days.max():%Y-%m-%d}: adjust featurize.split"
            )
    kept = sum(len(s) for s in splits.values())
    log.info("time split kept %d of %d examples", kept, len(examples))
    return splits


def split_summary(splits: Mapping[str, pd.DataFrame], dataset: Dataset) -> dict:
    """Row count, positive rate and (with a time column) date range of each split."""
    summary = {}
    for name, frame in splits.items():
        summary[name] = {
            "rows": len(frame),
            "positive_rate": round(float(frame[dataset.target_column].mean()), 4),
        }
        if dataset.time_column is not None:
            summary[name]["first_day"] = f"{frame[dataset.time_column].min():%Y-%m-%d}"
            summary[name]["last_day"] = f"{frame[dataset.time_column].max():%Y-%m-%d}"
    return summary


def write_feature_sets(
    out: Path,
    splits: Mapping[str, pd.DataFrame],
    tables: FeatureTables,
    dataset: Dataset,
) -> None:
    """Write what the featurize stage produces under `out`.

    `examples/<split>.parquet` holds the raw records with the dataset's context columns
    (time if it has one, target); `features/<split>.parquet` the model-ready features with
    the same context columns; `featurizer.json` the fitted feature tables.
    """
    context_columns = dataset.context_columns()
    for name, examples in splits.items():
        write_parquet(examples, out / "examples" / f"{name}.parquet")
        features = tables.transform(examples)
        write_parquet(
            pd.concat([features, examples[context_columns]], axis=1),
            out / "features" / f"{name}.parquet",
        )
    tables.write(out / TABLES_FILE)
