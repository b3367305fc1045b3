"""featurize stage: join, split, fit the shared featurizer, write feature sets.

The split is by date windows for a dataset with a time column, else seeded and stratified
fractions (`featurize.split`). Outputs under `paths.featurize`:
`examples/<split>.parquet` (raw records + time if any + target, what serving receives),
`features/<split>.parquet` (model-ready), `featurizer.json`; split sizes and class
balance go to `metrics/featurize.json`.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from prefect import flow, get_run_logger, task

from loopline.core.io import write_json
from loopline.core.params import Params, load_params, params_file
from loopline.data.datasets import get_dataset
from loopline.data.datasets.base import read_tables
from loopline.infra.orchestration import run_stage
from loopline.scoring.features import (
    FeatureTables,
    fit_featurizer,
    split_examples,
    split_summary,
    write_feature_sets,
)


@task
def build_splits(params: Params) -> tuple[dict[str, pd.DataFrame], dict[str, pd.DataFrame]]:
    """Join the raw tables into examples and split them into train, valid and test."""
    dataset = get_dataset(params.dataset.name)
    tables = read_tables(params.paths.data, dataset.contract)
    examples = dataset.build_examples(tables, params.dataset)
    return split_examples(examples, dataset, params), tables


@task
def fit(params: Params, train: pd.DataFrame, tables: dict[str, pd.DataFrame]) -> FeatureTables:
    """Fit the featurizer on the training split."""
    dataset = get_dataset(params.dataset.name)
    return fit_featurizer(train, dataset=dataset, tables=tables, params=params)


@task
def write_outputs(
    params: Params, splits: dict[str, pd.DataFrame], featurizer: FeatureTables
) -> dict:
    """Write examples, features, the fitted featurizer and the split metrics."""
    dataset = get_dataset(params.dataset.name)
    write_feature_sets(params.paths.features, splits, featurizer, dataset)
    metrics = {
        "splits": split_summary(splits, dataset),
        "features": {
            "numeric": len(featurizer.numeric_features),
            "categorical": len(featurizer.categorical_features),
        },
    }
    write_json(metrics, params.paths.metrics / "featurize.json")
    return metrics


@flow(name="featurize")
def featurize(params_path: Path | None = None) -> None:
    """Turn validated raw tables into split, model-ready feature sets."""
    params = load_params(params_file(params_path))
    splits, tables = build_splits(params)
    featurizer = fit(params, splits["train"], tables)
    metrics = write_outputs(params, splits, featurizer)
    get_run_logger().info("splits: %s", metrics["splits"])


if __name__ == "__main__":
    run_stage(featurize)
