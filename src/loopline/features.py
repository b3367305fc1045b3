"""Feature engineering shared by training and serving, and the time-based split.

`TabularFeaturizer` is a scikit-learn transformer: fitted once on the training window
(reference lookups, history rates, category vocabularies, clipping and scaling), saved by
the featurize stage, and reused unchanged inside every logged model. So the transformation
a model was trained with is exactly the one it is served with.

Its output is model-ready: numeric columns (clipped, imputed, standardised, float32, plus
a `__missing` flag where training data had gaps) followed by categorical columns as
integer codes (0 = unknown or rare, 1..K = categories seen at least `min_category_count`
times in training). Every row is transformed on its own, so a record gets the same
features alone or inside any batch.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin

from loopline.config import DateWindow, FeaturizeParams
from loopline.datasets.base import FeatureSpec
from loopline.errors import ConfigError, DataContractError
from loopline.io import write_joblib, write_parquet

log = logging.getLogger(__name__)

UNKNOWN_CODE = 0
HISTORY_PREFIX = "history_rate__"
MISSING_SUFFIX = "__missing"


def _present(value: object) -> bool:
    """False for None and NaN."""
    return value is not None and value == value  # noqa: PLR0124 - NaN is the one value != itself


def _group_key(frame: pd.DataFrame, group: tuple[str, ...]) -> pd.Series:
    """One string per row joining the group's values, e.g. "UA|EWR-IAH"."""
    columns = [frame[column].tolist() for column in group]
    keys = ["|".join(str(v) for v in values) for values in zip(*columns, strict=True)]
    return pd.Series(keys, index=frame.index, dtype="object")


def history_feature_name(group: tuple[str, ...]) -> str:
    """Output column name of the history rate for a column group."""
    return HISTORY_PREFIX + "_".join(group)


class TabularFeaturizer(TransformerMixin, BaseEstimator):
    """Turns raw records into model-ready features; see the module docstring.

    Args:
        spec: the dataset's feature specification.
        reference_tables: raw reference tables that `spec.lookups` join (captured at fit).
        history_smoothing: pseudo-count pulling each group's late rate toward the overall
            rate (an m-estimate), so rare routes do not get extreme rates.
        min_category_count: categories rarer than this in training share the unknown code.
        clip_quantiles: numeric values are clipped to these training quantiles.
    """

    def __init__(
        self,
        spec: FeatureSpec,
        reference_tables: Mapping[str, pd.DataFrame] | None = None,
        history_smoothing: float = 100.0,
        min_category_count: int = 30,
        clip_quantiles: tuple[float, float] = (0.001, 0.999),
    ) -> None:
        self.spec = spec
        self.reference_tables = reference_tables
        self.history_smoothing = history_smoothing
        self.min_category_count = min_category_count
        self.clip_quantiles = clip_quantiles

    # -- fitting -------------------------------------------------------------------------

    def fit(self, records: pd.DataFrame, y: pd.Series) -> TabularFeaturizer:
        """Learn lookups, history rates, vocabularies and numeric statistics from training."""
        if len(records) == 0:
            raise DataContractError("cannot fit features on an empty training window")
        target = pd.Series(np.asarray(y, dtype="float64"), index=records.index)
        self.lookup_tables_ = self._capture_lookups()
        frame = self._prepare(records)
        self.prior_rate_ = float(target.mean())
        self.history_rates_ = {
            group: self._fit_history(frame, target, group) for group in self.spec.history
        }
        for group in self.spec.history:
            frame[history_feature_name(group)] = self._apply_history(frame, group)
        self._fit_categories(frame)
        self._fit_numeric(frame)
        return self

    def _capture_lookups(self) -> dict[str, pd.DataFrame]:
        captured = {}
        for lookup in self.spec.lookups:
            tables = self.reference_tables or {}
            if lookup.table not in tables:
                raise DataContractError(f"lookup table {lookup.table!r} was not provided")
            reference = tables[lookup.table]
            captured[lookup.table] = (
                reference.drop_duplicates(lookup.ref_key)
                .set_index(lookup.ref_key)[list(lookup.columns)]
                .add_prefix(lookup.prefix)
            )
        return captured

    def _fit_history(
        self, frame: pd.DataFrame, target: pd.Series, group: tuple[str, ...]
    ) -> pd.Series:
        stats = target.groupby(_group_key(frame, group)).agg(["sum", "count"])
        m = self.history_smoothing
        return (stats["sum"] + m * self.prior_rate_) / (stats["count"] + m)

    def _fit_categories(self, frame: pd.DataFrame) -> None:
        self.vocabularies_: dict[str, dict[str, int]] = {}
        for column in self.spec.categorical:
            counts = frame[column].dropna().astype(str).value_counts()
            kept = sorted(counts[counts >= self.min_category_count].index)
            self.vocabularies_[column] = {value: code for code, value in enumerate(kept, 1)}

    def _fit_numeric(self, frame: pd.DataFrame) -> None:
        numeric = self._numeric_columns()
        values = frame[numeric].astype("float64")
        low_q, high_q = self.clip_quantiles
        self.clip_low_ = values.quantile(low_q)
        self.clip_high_ = values.quantile(high_q)
        clipped = values.clip(self.clip_low_, self.clip_high_, axis=1)
        self.medians_ = clipped.median().fillna(0.0)
        filled = clipped.fillna(self.medians_)
        self.means_ = filled.mean()
        self.scales_ = filled.std(ddof=0).replace(0.0, 1.0).fillna(1.0)
        self.missing_flags_ = [c for c in numeric if values[c].isna().any()]
        self.numeric_features_ = [*numeric, *(c + MISSING_SUFFIX for c in self.missing_flags_)]
        self.categorical_features_ = list(self.spec.categorical)
        self.cardinalities_ = {c: len(v) + 1 for c, v in self.vocabularies_.items()}

    # -- transforming ----------------------------------------------------------------------

    def transform(self, records: pd.DataFrame) -> pd.DataFrame:
        """Model-ready features for `records` (same index, numeric then categorical).

        The arithmetic runs on NumPy arrays: a serving call scores a handful of rows, where
        pandas' per-operation overhead, not the data, would dominate.
        """
        frame = self._prepare(records)
        columns = [frame[c].to_numpy(dtype="float64", na_value=np.nan) for c in self.spec.numeric]
        columns += [self._apply_history(frame, g).to_numpy() for g in self.spec.history]
        values = np.column_stack(columns) if columns else np.empty((len(frame), 0))
        missing = np.isnan(values)
        low = self.clip_low_.fillna(-np.inf).to_numpy()
        high = self.clip_high_.fillna(np.inf).to_numpy()
        filled = np.where(missing, self.medians_.to_numpy(), np.clip(values, low, high))
        scaled = (filled - self.means_.to_numpy()) / self.scales_.to_numpy()
        numeric = self._numeric_columns()
        flagged = missing[:, [numeric.index(c) for c in self.missing_flags_]]
        codes = [self._codes(frame[column], vocab) for column, vocab in self.vocabularies_.items()]
        dense = np.hstack([scaled, flagged]).astype("float32")
        coded = np.column_stack(codes) if codes else np.empty((len(frame), 0), dtype="int32")
        return pd.concat(
            [
                pd.DataFrame(dense, index=frame.index, columns=self.numeric_features_),
                pd.DataFrame(coded, index=frame.index, columns=self.categorical_features_),
            ],
            axis=1,
        )

    @staticmethod
    def _codes(values: pd.Series, vocabulary: dict[str, int]) -> np.ndarray:
        """Integer codes (1..K) of known categories; 0 for unknown, rare or missing."""
        known = (
            vocabulary.get(str(v), UNKNOWN_CODE) if _present(v) else UNKNOWN_CODE for v in values
        )
        return np.fromiter(known, dtype="int32", count=len(values))

    def get_feature_names_out(self, input_features: object = None) -> np.ndarray:
        """Output column names, numeric first."""
        return np.asarray([*self.numeric_features_, *self.categorical_features_], dtype=object)

    def _numeric_columns(self) -> list[str]:
        return [*self.spec.numeric, *(history_feature_name(g) for g in self.spec.history)]

    def _prepare(self, records: pd.DataFrame) -> pd.DataFrame:
        parts = [records]
        for lookup in self.spec.lookups:
            attributes = self.lookup_tables_[lookup.table].reindex(records[lookup.key].to_numpy())
            parts.append(attributes.set_axis(records.index))
        return self.spec.derive(pd.concat(parts, axis=1) if len(parts) > 1 else records.copy())

    def _apply_history(self, frame: pd.DataFrame, group: tuple[str, ...]) -> pd.Series:
        rates = self.history_rates_[group].to_dict()
        keys = _group_key(frame, group)
        values = [rates.get(key, self.prior_rate_) for key in keys]
        return pd.Series(values, index=frame.index, dtype="float64")


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


def split_summary(splits: Mapping[str, pd.DataFrame], time_column: str, target_column: str) -> dict:
    """Row count, date range and positive rate of each split (the featurize metrics)."""
    return {
        name: {
            "rows": len(frame),
            "positive_rate": round(float(frame[target_column].mean()), 4),
            "first_day": f"{frame[time_column].min():%Y-%m-%d}",
            "last_day": f"{frame[time_column].max():%Y-%m-%d}",
        }
        for name, frame in splits.items()
    }


def fit_featurizer(
    train: pd.DataFrame,
    *,
    record_columns: list[str],
    target_column: str,
    spec: FeatureSpec,
    reference_tables: Mapping[str, pd.DataFrame],
    params: FeaturizeParams,
) -> TabularFeaturizer:
    """Fit the shared featurizer on the training window only."""
    featurizer = TabularFeaturizer(
        spec,
        reference_tables=reference_tables,
        history_smoothing=params.history_smoothing,
        min_category_count=params.min_category_count,
        clip_quantiles=params.clip_quantiles,
    )
    return featurizer.fit(train[record_columns], train[target_column])


def write_feature_sets(
    out: Path,
    splits: Mapping[str, pd.DataFrame],
    featurizer: TabularFeaturizer,
    record_columns: list[str],
    context_columns: list[str],
) -> None:
    """Write what the featurize stage produces under `out`.

    `examples/<split>.parquet` holds the raw records with `context_columns` (time, target);
    `features/<split>.parquet` the model-ready features with the same context columns;
    `featurizer.joblib` the fitted featurizer.
    """
    for name, examples in splits.items():
        write_parquet(examples, out / "examples" / f"{name}.parquet")
        features = featurizer.transform(examples[record_columns])
        write_parquet(
            pd.concat([features, examples[context_columns]], axis=1),
            out / "features" / f"{name}.parquet",
        )
    write_joblib(featurizer, out / "featurizer.joblib")
