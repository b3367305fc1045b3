"""The featurize stage's work: split the examples, fit the featurizer, write feature sets.

`fit_featurizer` learns the `FeatureTables` (`loopline.scoring.features`) from the
training split only; the same tables then transform every split here, and every record
the served model scores.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from loopline.core.errors import DataContractError
from loopline.core.io import write_parquet
from loopline.core.params import Params
from loopline.data import columns as cols
from loopline.data.datasets.base import Dataset
from loopline.data.time_axis import TimeAxis
from loopline.scoring.features import (
    FeatureTables,
    HistoryTable,
    LookupTable,
    group_keys,
    history_feature_name,
    prepare,
)
from loopline.workspace import FeaturizeLayout


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
    inputs = pd.DataFrame(
        {name: np.asarray(frame[name], dtype="float64") for name in spec.numeric}
        | {history_feature_name(h.group): h.apply(frame) for h in history}
    )
    return FeatureTables(
        spec=spec, record_fields=fields, lookups=lookups, history=history,
        vocabularies={
            column: _fit_vocabulary(frame[column], settings.min_category_count)
            for column in spec.categorical
        },
        numeric_inputs=list(inputs.columns),
        **_numeric_scaling(inputs, settings.clip_quantiles),
        missing_flags=[c for c in inputs.columns if inputs[c].isna().any()],
    )  # fmt: skip


def _numeric_scaling(inputs: pd.DataFrame, quantiles: tuple[float, float]) -> dict[str, np.ndarray]:
    """Clip bounds (training quantiles), medians for gaps, and standardisation."""
    low_q, high_q = quantiles
    clip_low, clip_high = inputs.quantile(low_q), inputs.quantile(high_q)
    clipped = inputs.clip(clip_low, clip_high, axis=1)
    medians = clipped.median().fillna(0.0)
    filled = clipped.fillna(medians)
    return {
        "clip_low": clip_low.fillna(-np.inf).to_numpy(),
        "clip_high": clip_high.fillna(np.inf).to_numpy(),
        "medians": medians.to_numpy(),
        "means": filled.mean().to_numpy(),
        "scales": filled.std(ddof=0).replace(0.0, 1.0).fillna(1.0).to_numpy(),
    }


def _fit_history(
    keys: np.ndarray, target: np.ndarray, group: tuple[str, ...], prior: float, m: float
) -> HistoryTable:
    stats = pd.Series(target).groupby(pd.Series(keys, dtype=object)).agg(["sum", "count"])
    rates = (stats["sum"] + m * prior) / (stats["count"] + m)
    return HistoryTable(group, [str(k) for k in rates.index], np.append(rates.to_numpy(), prior))


def _fit_vocabulary(values: np.ndarray, min_count: int) -> list[str]:
    counts = pd.Series(values, dtype=object).dropna().astype(str).value_counts()
    return sorted(counts[counts >= min_count].index)


def build_feature_sets(
    tables: Mapping[str, pd.DataFrame], dataset: Dataset, params: Params
) -> tuple[dict[str, pd.DataFrame], FeatureTables]:
    """Examples from the raw tables, split, and the featurizer fitted on the train split."""
    examples = dataset.build_examples(tables, params.dataset)
    splits = TimeAxis.of(dataset).split(examples, params)
    featurizer = fit_featurizer(splits["train"], dataset=dataset, tables=tables, params=params)
    return splits, featurizer


def split_summary(splits: Mapping[str, pd.DataFrame], dataset: Dataset) -> dict:
    """Row count, positive rate and (where the axis has dates) date range of each split."""
    axis = TimeAxis.of(dataset)
    return {
        name: {
            "rows": len(frame),
            "positive_rate": round(float(frame[dataset.target_column].mean()), 4),
            **axis.span(frame),
        }
        for name, frame in splits.items()
    }


def write_feature_sets(
    layout: FeaturizeLayout,
    splits: Mapping[str, pd.DataFrame],
    tables: FeatureTables,
    dataset: Dataset,
) -> None:
    """Write what the featurize stage produces (`FeaturizeLayout`).

    The examples of each split hold the raw records with the dataset's context columns
    (time if it has one, target); its features the model-ready columns with the same
    context columns; then the fitted feature tables.
    """
    context_columns = TimeAxis.of(dataset).context_columns()
    for name, examples in splits.items():
        write_parquet(examples, layout.examples(name))
        features = tables.transform(examples)
        write_parquet(
            pd.concat([features, examples[context_columns]], axis=1), layout.features(name)
        )
    tables.write(layout.featurizer)
