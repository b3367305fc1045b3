"""`loopline score` and the score flow: batch scoring with a registered version."""

from __future__ import annotations

from pathlib import Path

from loopline.core.errors import LooplineError
from loopline.core.params import Params
from loopline.data.datasets import get_dataset
from loopline.registry.versions import CHAMPION, Registry
from loopline.scoring.batch import BatchResult, score_file
from loopline.scoring.registered import load_version
from loopline.training.tracking import configure_mlflow


def score_registered(
    params: Params,
    source: Path,
    target: Path,
    version: str | None = None,
    *,
    root: Path = Path(),
    progress: bool = True,
) -> BatchResult:
    """Score a Parquet file of records with `version` (default: the champion), all cores."""
    configure_mlflow(params.mlflow, root=root)
    registry = Registry.rooted(params.registry, root)
    chosen = version or registry.alias_version(CHAMPION)
    if chosen is None:
        raise LooplineError(f"{registry.name} has no champion yet: run `make run` first")
    model = load_version(registry, chosen, alias="" if version else CHAMPION)
    contract = get_dataset(params.dataset.name).contract
    required = {f.name for f in contract.record_fields() if not f.nullable}
    return score_file(model, source, target, required, progress=progress)
