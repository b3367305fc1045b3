"""featurize stage: join, split, fit the shared featurizer, write feature sets.

The split is the time axis's (`featurize.split`: date windows for a dataset with a time
column, else seeded and stratified fractions, or a retrain's split by key). Outputs are
the Workspace's `FeaturizeLayout`: the examples of each split (raw records, time if any,
target: what serving receives), their model-ready features, and the fitted feature
tables; split sizes and class balance go to `metrics/featurize.json`.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from prefect import flow, get_run_logger, task

from loopline.core.io import write_json
from loopline.infra.prefect import run_stage
from loopline.scoring.features import FeatureTables
from loopline.training.featurize import fit_featurizer, split_summary, write_feature_sets
from loopline.workspace import Workspace


@task
def build_splits(workspace: Workspace) -> tuple[dict[str, pd.DataFrame], dict[str, pd.DataFrame]]:
    """Join the raw tables into examples and split them into train, valid and test."""
    tables = workspace.tables()
    examples = workspace.dataset.build_examples(tables, workspace.params.dataset)
    return workspace.axis.split(examples, workspace.params), tables


@task
def fit(
    workspace: Workspace, train: pd.DataFrame, tables: dict[str, pd.DataFrame]
) -> FeatureTables:
    """Fit the featurizer on the training split."""
    return fit_featurizer(train, dataset=workspace.dataset, tables=tables, params=workspace.params)


@task
def write_outputs(
    workspace: Workspace, splits: dict[str, pd.DataFrame], featurizer: FeatureTables
) -> dict:
    """Write examples, features, the fitted featurizer and the split metrics."""
    write_feature_sets(workspace.layout, splits, featurizer, workspace.dataset)
    metrics = {
        "splits": split_summary(splits, workspace.dataset),
        "features": {
            "numeric": len(featurizer.numeric_features),
            "categorical": len(featurizer.categorical_features),
        },
    }
    write_json(metrics, workspace.params.paths.metrics / "featurize.json")
    return metrics


@flow(name="featurize")
def featurize(params_path: Path | None = None) -> None:
    """Turn validated raw tables into split, model-ready feature sets."""
    workspace = Workspace.load(params_path)
    splits, tables = build_splits(workspace)
    featurizer = fit(workspace, splits["train"], tables)
    metrics = write_outputs(workspace, splits, featurizer)
    get_run_logger().info("splits: %s", metrics["splits"])


if __name__ == "__main__":
    run_stage(featurize)
