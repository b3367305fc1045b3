"""The compiled scorer as an MLflow model: what the train stage logs for every family.

The logged model is a pyfunc that takes raw records (the contract's record fields; the
nullable ones may be left out) and returns `probability` and `label`. Its only artifact is
the compiled scorer (feature tables + estimator in safe formats), so `mlflow models serve`
and `mlflow.pyfunc.spark_udf` run exactly what Loopline serves, and nothing in the model
is unpickled. (Loopline itself never calls MLflow's loader: `loopline.scoring.registered`.)
"""

from __future__ import annotations

from importlib import metadata
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, Schema

from loopline.data.contract import DataContract
from loopline.scoring.registered import SCORER_ARTIFACT
from loopline.scoring.scorer import load_scorer

MLFLOW_TYPES = {"int": "long", "float": "double", "string": "string", "datetime": "datetime"}
MODEL_ARTIFACT = "model"
PYFUNC_ENTRY = Path(__file__).with_name("pyfunc_entry.py")
REQUIREMENTS = (
    "mlflow",
    "pandas",
    "numpy",
    "scipy",
    "pyarrow",
    "xgboost-cpu",
    "treelite",
    "safetensors",
)


def record_signature(contract: DataContract) -> ModelSignature:
    """Input and output schema of the logged model, built from the data contract."""
    inputs = Schema(
        [
            ColSpec(MLFLOW_TYPES[f.dtype], f.name, required=not f.nullable)
            for f in contract.record_fields()
        ]
    )
    outputs = Schema([ColSpec("double", "probability"), ColSpec("long", "label")])
    return ModelSignature(inputs=inputs, outputs=outputs)


class LooplinePyfunc(mlflow.pyfunc.PythonModel):
    """MLflow face of a compiled scorer: raw records in, probability and label out."""

    def load_context(self, context: Any) -> None:
        """Load the compiled scorer shipped as the `scorer` artifact."""
        self.scorer = load_scorer(Path(context.artifacts[SCORER_ARTIFACT]))

    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict | None = None
    ) -> pd.DataFrame:
        """Score records; optional fields may be absent (they count as missing)."""
        return self.scorer.score_frame(model_input).reset_index(drop=True)


def _requirements() -> list[str]:
    pinned = []
    for name in REQUIREMENTS:
        try:
            pinned.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            continue
    return pinned


def log_model(scorer_dir: Path, contract: DataContract, example: pd.DataFrame) -> Any:
    """Log the compiled scorer in `scorer_dir` as a pyfunc in the active run; MLflow's ModelInfo."""
    columns = [f.name for f in contract.record_fields()]
    return mlflow.pyfunc.log_model(
        name=MODEL_ARTIFACT,
        python_model=PYFUNC_ENTRY,  # models-from-code: no pickled Python object in the model
        artifacts={SCORER_ARTIFACT: str(scorer_dir)},
        signature=record_signature(contract),
        input_example=example[columns].head(5),
        pip_requirements=_requirements(),
    )
