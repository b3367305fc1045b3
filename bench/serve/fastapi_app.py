"""The common alternative the benchmark compares with: a minimal FastAPI app, same model.

It loads the registry's champion through MLflow exactly as the BentoML service does, and
scores whatever list of records it is sent: no schema, no batching, no log, no guards.
Run: LOOPLINE_PARAMS=params.yaml uvicorn bench.serve.fastapi_app:app --port 8000
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from fastapi import FastAPI

from loopline.config import load_params
from loopline.registry import CHAMPION, Registry
from loopline.tracking import configure_mlflow

params_file = Path(os.environ.get("LOOPLINE_PARAMS", "params.yaml")).resolve()
settings = load_params(params_file)
configure_mlflow(settings.mlflow, root=params_file.parent)
registry = Registry(settings.registry)
version = registry.alias_version(CHAMPION)
model = mlflow.pyfunc.load_model(registry.model_uri(version))
app = FastAPI()


@app.post("/predict")
def predict(body: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Probability and label per record."""
    scored = model.predict(pd.DataFrame.from_records(body["records"]))
    return {
        "model_version": version,
        "predictions": scored.to_dict(orient="records"),
    }
