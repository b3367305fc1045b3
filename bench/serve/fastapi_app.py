"""The minimal alternative the serving bench races: FastAPI around the same compiled scorer.

It loads the registry's champion exactly as the Loopline service does (its compiled
scorer, through `loopline.scoring.registered`) and scores whatever list of records it is
sent: no validation, no prediction log, no guards, no hot swap. What Loopline adds on top
of this is what the bench's ratio prices.
Run: LOOPLINE_PARAMS=params.yaml uvicorn bench.serve.fastapi_app:app --port 8000
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from loopline.registry.versions import CHAMPION
from loopline.scoring.registered import load_version
from loopline.workspace import Workspace

registry = Workspace.load().registry  # the file LOOPLINE_PARAMS names, else ./params.yaml
champion = load_version(registry, registry.alias_version(CHAMPION), CHAMPION, threads=1)
app = FastAPI()


@app.post("/predict")
async def predict(body: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Probability and label per record."""
    probability = champion.scorer.score_records(body["records"])
    labels = champion.scorer.labels(probability)
    return {
        "model_version": champion.version,
        "predictions": [
            {"probability": p, "label": label}
            for p, label in zip(probability.tolist(), labels.tolist(), strict=True)
        ],
    }
