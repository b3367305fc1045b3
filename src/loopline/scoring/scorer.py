"""The compiled scorer: feature tables + estimator + threshold, in one folder of safe files.

```
scorer/
  scorer.json        manifest: format, family, threshold, estimator entry, sha256 of each file
  featurizer.json    the feature tables (loopline.scoring.features.FeatureTables)
  model.ubj | model.tl | linear.safetensors | mlp.safetensors
```

`loopline.training.compile.compile_scorer` writes it at training time from the fitted
objects and refuses to finish unless the compiled probabilities match the training-side
model within `PARITY_TOLERANCE`.
`load_scorer` reads it back, verifying every file's checksum; nothing in it can run code.
A `CompiledScorer` goes from records (dicts, a pandas frame or an Arrow table) to one
float32 feature array to probabilities, with no pandas on the record path.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from loopline.data import columns as cols
from loopline.scoring.features import FeatureTables
from loopline.scoring.formats import Estimator, ScorerError, load_estimator

SCORER_DIR = "scorer"  # a trained family's compiled scorer: paths.models/<family>/scorer
MANIFEST_FILE = "scorer.json"
SCORER_FORMAT = 1
PARITY_TOLERANCE = 1e-5  # max |compiled - training-side| probability allowed at export
SINGLES = 32  # rows also checked one at a time (small batches may take another code path)


@dataclass(frozen=True)
class CompiledScorer:
    """Scores raw records with a model version's tables and estimator."""

    family: str
    threshold: float
    tables: FeatureTables
    estimator: Estimator
    manifest: dict
    parity_gap: float | None = None  # measured at export (never saved: it varies by machine)

    @property
    def record_fields(self) -> dict[str, str]:
        """Input fields and their dtypes (the data contract's record fields)."""
        return self.tables.record_fields

    def features(self, columns: cols.Columns) -> np.ndarray:
        """The model-ready float32 array of record columns."""
        return self.tables.transform_columns(columns)

    def probabilities(self, columns: cols.Columns) -> np.ndarray:
        """P(positive) per row of record columns."""
        return self.estimator.predict(self.tables.transform_columns(columns))

    def labels(self, probabilities: np.ndarray) -> np.ndarray:
        """0/1 at the version's threshold (chosen on its validation window)."""
        return (probabilities >= self.threshold).astype("int64")

    def score_records(self, records: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """P(positive) of validated dict records (the API's path)."""
        return self.probabilities(cols.from_records(records, self.record_fields))

    def score_arrow(self, table: pa.Table) -> np.ndarray:
        """P(positive) of an Arrow table's rows (batch scoring)."""
        return self.probabilities(cols.from_arrow(table, self.record_fields))

    def score_frame(self, records: pd.DataFrame) -> pd.DataFrame:
        """`probability` and `label` per row of a frame, on its index (training-side callers)."""
        probability = self.probabilities(cols.from_frame(records, self.record_fields))
        return pd.DataFrame(
            {"probability": probability, "label": self.labels(probability)}, index=records.index
        )


def scorer_digest(folder: Path) -> str:
    """sha256 over a compiled scorer's files (names and bytes): equal for equal scorers."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(path.relative_to(folder).as_posix().encode() + b"\0")
        digest.update(file_sha256(path).encode())
    return digest.hexdigest()


def file_sha256(path: Path) -> str:
    """sha256 of a file's bytes (hex)."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def default_threads() -> int:
    """Every core, or fewer where OMP_NUM_THREADS says so.

    Treelite refuses more threads than OpenMP was given: `mlflow models serve` of a tree
    champion under OMP_NUM_THREADS=1 answered every request with a 400.
    """
    cores = os.cpu_count() or 1
    first = os.environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()
    return min(cores, int(first)) if first.isdigit() and int(first) > 0 else cores


def load_scorer(folder: Path, threads: int | None = None) -> CompiledScorer:
    """Read a compiled scorer; ScorerError names what is missing, damaged or unknown.

    `threads` bounds the estimator's threads (default: `default_threads()`); a web worker
    answering small requests wants 1.
    """
    manifest_path = folder / MANIFEST_FILE
    if not manifest_path.is_file():
        raise ScorerError(
            f"{folder} holds no compiled scorer ({MANIFEST_FILE} is missing): only versions "
            "logged by Loopline's train stage can be loaded; re-train to produce one"
        )
    try:
        manifest = json.loads(manifest_path.read_text())
    except json.JSONDecodeError as error:
        raise ScorerError(f"{manifest_path} is not valid JSON: {error}") from None
    if manifest.get("format") != SCORER_FORMAT:
        raise ScorerError(
            f"{manifest_path}: scorer format {manifest.get('format')!r}, this Loopline reads "
            f"format {SCORER_FORMAT}"
        )
    for name, digest in manifest["files"].items():
        path = folder / name
        if not path.is_file() or file_sha256(path) != digest:
            raise ScorerError(
                f"{path} is missing or does not match its checksum in {MANIFEST_FILE}"
            )
    tables = FeatureTables.read(folder / manifest["featurizer"])
    estimator = load_estimator(manifest["estimator"], folder, threads or default_threads())
    return CompiledScorer(
        family=manifest["family"],
        threshold=float(manifest["threshold"]),
        tables=tables,
        estimator=estimator,
        manifest=manifest,
    )
