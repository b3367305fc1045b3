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

from loopline.core.io import atomic_path, write_json
from loopline.core.params import Params, load_params, params_file
from loopline.data.datasets import get_dataset
from loopline.infra.orchestration import run_stage
from loopline.scoring.scorer import SCORER_DIR, load_scorer
from loopline.training.metrics import classification_metrics, comparison_table, curves


@task(task_run_name="score-{family}")
def score(family: str, params: Params, test: pd.DataFrame) -> dict[str, float]:
    """Test-window metrics of one candidate; its curve data goes to the plots folder."""
    dataset = get_dataset(params.dataset.name)
    scorer = load_scorer(params.paths.models / family / SCORER_DIR)
    labels = test[dataset.target_column].to_numpy()
    proba = scorer.score_frame(test)["probability"].to_numpy()
    threshold = scorer.threshold
    names = (dataset.wording.negative, dataset.wording.positive)
    drawn = curves(labels, proba, threshold, names, params.evaluate.curve_points)
    for name, frame in drawn.items():
        with atomic_path(params.paths.evaluation / "plots" / name / f"{family}.csv") as tmp:
            frame.to_csv(tmp, index=False)
    return classification_metrics(labels, proba, threshold)


@flow(name="evaluate")
def evaluate(params_path: Path | None = None) -> None:
    """Score all candidates on the test window and compare them."""
    params = load_params(params_file(params_path))
    test = pd.read_parquet(params.paths.features / "examples" / "test.parquet")
    results = {family: score(family, params, test) for family in params.evaluate.candidates}
    write_json(results, params.paths.metrics / "evaluate.json")
    table = comparison_table(results, params.registry.primary_metric)
    with atomic_path(params.paths.evaluation / "comparison.md") as tmp:
        tmp.write_text(table + "\n")
    get_run_logger().info("test split, %s rows\n%s", f"{len(test):,}", table)


if __name__ == "__main__":
    run_stage(evaluate)
