"""featurize stage: join, split by time, fit the shared featurizer, write feature sets.

Outputs under `paths.featurize`: `examples/<split>.parquet` (raw records + time + target,
what serving receives), `features/<split>.parquet` (model-ready), `featurizer.json`;
split sizes and class balance go to `metrics/featurize.json`.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from prefect import flow, get_run_logger, task

from loopline.config import Params, load_params, params_file
from loopline.datasets import get_dataset
from loopline.datasets.base import read_tables
from loopline.features import (
    FeatureTables,
    fit_featurizer,
    split_by_time,
    split_summary,
    write_feature_sets,
)
from loopline.io import write_json
from loopline.orchestration import run_stage


@task
def build_splits(params: Params) -> tuple[dict[str, pd.DataFrame], dict[str, pd.DataFrame]]:
    """Join the raw tables into examples and cut them into time windows."""
    dataset = get_dataset(params.dataset.name)
    tables = read_tables(params.paths.data, dataset.contract)
    examples = dataset.build_examples(tables, params.dataset)
    splits = split_by_time(examples, dataset.time_column, params.featurize.split.windows())
    return splits, tables


@task
def fit(params: Params, train: pd.DataFrame, tables: dict[str, pd.DataFrame]) -> FeatureTables:
    """Fit the featurizer on the training window."""
    dataset = get_dataset(params.dataset.name)
    spec = dataset.feature_spec(params.featurize)
    references = {lookup.table: tables[lookup.table] for lookup in spec.lookups}
    return fit_featurizer(
        train, dataset=dataset, reference_tables=references, params=params.featurize
    )


@task
def write_outputs(
    params: Params, splits: dict[str, pd.DataFrame], featurizer: FeatureTables
) -> dict:
    """Write examples, features, the fitted featurizer and the split metrics."""
    dataset = get_dataset(params.dataset.name)
    write_feature_sets(
        params.paths.features,
        splits,
        featurizer,
        context_columns=[dataset.time_column, dataset.target_column],
    )
    metrics = {
        "splits": split_summary(splits, dataset.time_column, dataset.target_column),
        "features": {
            "numeric": len(featurizer.numeric_features),
            "categorical": len(featurizer.categorical_features),
        },
    }
    write_json(metrics, params.paths.metrics / "featurize.json")
    return metrics


@flow(name="featurize")
def featurize(params_path: Path | None = None) -> None:
    """Turn validated raw tables into time-split, model-ready feature sets."""
    params = load_params(params_file(params_path))
    splits, tables = build_splits(params)
    featurizer = fit(params, splits["train"], tables)
    metrics = write_outputs(params, splits, featurizer)
    get_run_logger().info("splits: %s", metrics["splits"])


if __name__ == "__main__":
    run_stage(featurize)
