"""Compiling a trained model: its feature tables and estimator into the compiled scorer.

The folder layout and the loader are `loopline.scoring.scorer`'s; writing one is the
training side's last step. The family's own `export` writes the estimator in a safe
format, and nothing is kept unless the compiled scorer, loaded back from its files,
gives the trained model's probabilities within `PARITY_TOLERANCE`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from loopline.core.io import atomic_dir
from loopline.scoring.features import TABLES_FILE, FeatureTables
from loopline.scoring.formats import ScorerError, load_estimator
from loopline.scoring.scorer import (
    MANIFEST_FILE,
    PARITY_TOLERANCE,
    SCORER_FORMAT,
    SINGLES,
    CompiledScorer,
    file_sha256,
    load_scorer,
)
from loopline.training.families import get_family


def export_estimator(family: str, estimator: Any, tables: FeatureTables, out: Path) -> dict:
    """Write `estimator` (as its family's `train` returned it) under `out`; its manifest entry."""
    return get_family(family).export(estimator, tables, out)


def parity_gap(expected: np.ndarray, estimator: Any, features: pd.DataFrame) -> float:
    """The largest |compiled - trained| probability, in one batch and row by row.

    Small batches may take another code path (XGBoost hands them to Treelite), so the
    first `SINGLES` rows are also scored one at a time.
    """
    if not len(expected):
        return 0.0
    matrix = features.to_numpy(dtype="float32")
    batch = estimator.predict(matrix)
    singles = [estimator.predict(matrix[i : i + 1])[0] for i in range(min(SINGLES, len(matrix)))]
    gaps = [np.abs(batch - expected), np.abs(np.asarray(singles, "float64") - expected[:SINGLES])]
    return float(max(g.max() for g in gaps))


def compile_scorer(
    out: Path,
    *,
    family: str,
    tables: FeatureTables,
    estimator: Any,
    threshold: float,
    check_features: pd.DataFrame,
    info: Mapping[str, Any] | None = None,
) -> CompiledScorer:
    """Export `estimator` and `tables` to `out` (atomically) and prove they agree.

    `check_features` are model-ready features (the validation split): the training-side
    estimator's probabilities on them must match the compiled estimator's within
    `PARITY_TOLERANCE`, or nothing is written and ScorerError says by how much. The
    measured gap is returned on the scorer (`parity_gap`), never written into the folder:
    it varies with a machine's numeric libraries, and the folder is a DVC output.
    """
    expected = estimator.predict_proba(check_features)[:, 1]
    with atomic_dir(out) as folder:
        tables.write(folder / TABLES_FILE)
        entry = export_estimator(family, estimator, tables, folder)
        loaded = load_estimator(entry, folder, os.cpu_count() or 1)
        gap = parity_gap(expected, loaded, check_features)
        if gap > PARITY_TOLERANCE:
            raise ScorerError(
                f"compiled {family} scorer differs from the trained model by up to {gap:.2e} "
                f"(tolerance {PARITY_TOLERANCE:.0e}) on {len(expected)} validation rows"
            )
        manifest = {
            "format": SCORER_FORMAT,
            "family": family,
            "threshold": float(threshold),
            "estimator": entry,
            "featurizer": TABLES_FILE,
            "parity": {"rows": len(expected), "tolerance": PARITY_TOLERANCE},
            "info": dict(info or {}),
            "files": {name: file_sha256(folder / name) for name in (TABLES_FILE, entry["file"])},
        }
        (folder / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2, sort_keys=True))
        scorer = load_scorer(folder)
    return replace(scorer, parity_gap=gap)
