"""evaluate stage: every candidate scored on the same held-out test split.

Each model is scored as it will be served: by its compiled scorer, from the raw test
records through its own feature tables, at the threshold it chose on validation. Writes
`metrics/evaluate.json` (`dvc metrics show`), the ROC / PR / calibration / confusion data
that `dvc plots show` draws, and a comparison table.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from loopline.core.io import atomic_path, write_json
from loopline.infra.prefect import run_stage
from loopline.scoring.scorer import SCORER_DIR, load_scorer
from loopline.training.metrics import classification_metrics, comparison_table, curves
from loopline.workspace import Workspace


@task(task_run_name="score-{family}", cache_policy=NO_CACHE)
def score(family: str, workspace: Workspace, test: pd.DataFrame) -> dict[str, float]:
    """Test-split metrics of one candidate; its curve data goes to the plots folder."""
    params, dataset = workspace.params, workspace.dataset
    scorer = load_scorer(params.paths.models / family / SCORER_DIR)
    labels = test[dataset.target_column].to_numpy()
    proba = scorer.score_frame(test)["probability"].to_numpy()
    names = (dataset.wording.negative, dataset.wording.positive)
    drawn = curves(labels, proba, scorer.threshold, names, params.evaluate.curve_points)
    for name, frame in drawn.items():
        with atomic_path(params.paths.evaluation / "plots" / name / f"{family}.csv") as tmp:
            frame.to_csv(tmp, index=False)
    return classification_metrics(labels, proba, scorer.threshold)


@flow(name="evaluate")
def evaluate(params_path: Path | None = None) -> None:
    """Score all candidates on the test split and compare them."""
    workspace = Workspace.load(params_path)
    params = workspace.params
    test = pd.read_parquet(workspace.layout.examples("test"))
    results = {family: score(family, workspace, test) for family in params.evaluate.candidates}
    write_json(results, params.paths.metrics / "evaluate.json")
    table = comparison_table(results, params.registry.primary_metric)
    with atomic_path(params.paths.evaluation / "comparison.md") as tmp:
        tmp.write_text(table + "\n")
    get_run_logger().info("test split, %s rows\n%s", f"{len(test):,}", table)


if __name__ == "__main__":
    run_stage(evaluate)
