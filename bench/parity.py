"""Benchmark: parity of each family's compiled scorer with its training-time model, full test month.

The train stage keeps only the compiled scorer. Training is deterministic (same params,
same seed, same features: tests/model/test_models.py guards it), so this bench retrains
each family from the featurize outputs, scores the whole test month with that
training-time model (feature tables + scikit-learn / XGBoost / PyTorch estimator) and
with the compiled scorer the train stage wrote (raw records in), and reports the largest
probability difference and any label that differs away from an exact threshold tie.

Run from the project root after `make run`:  .venv/bin/python -m bench.parity
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd

from loopline.scoring.scorer import PARITY_TOLERANCE, SCORER_DIR, load_scorer
from loopline.training.families import TrainContext, family_params
from loopline.training.feature_sets import load_feature_sets
from loopline.training.train import train_family
from loopline.workspace import Workspace

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    """Print a JSON table: rows, max |difference|, label mismatches per family."""
    workspace = Workspace.load(ROOT / "params.yaml")
    params, layout = workspace.params, workspace.layout
    data = load_feature_sets(layout.folder)
    test = pd.read_parquet(layout.examples("test"))
    # The MLP trains under torchrun on the featurize stage's files, on every core.
    context = TrainContext(
        seed=params.seed, features=layout, env={"OMP_NUM_THREADS": str(os.cpu_count() or 1)}
    )
    rows = {}
    for family in params.evaluate.candidates:
        section = family_params(params, family)
        trained = train_family(family, data, section, seed=params.seed, context=context)
        expected = trained.estimator.predict_proba(data.tables.transform(test))[:, 1]
        scorer = load_scorer(params.paths.models / family / SCORER_DIR)
        served = scorer.score_frame(test)
        gap = np.abs(served["probability"].to_numpy() - expected)
        ties = np.abs(expected - scorer.threshold) <= PARITY_TOLERANCE
        differ = (expected >= scorer.threshold) != served["label"].to_numpy()
        rows[family] = {
            "rows": len(test),
            "max_abs_difference": float(gap.max()),
            "within_1e-5": bool(gap.max() <= PARITY_TOLERANCE),
            "labels_differ_off_ties": int((differ & ~ties).sum()),
            "labels_differ_at_ties": int((differ & ties).sum()),
            "same_threshold": trained.threshold == scorer.threshold,
        }
    print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
