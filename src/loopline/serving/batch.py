"""`loopline score` and the score flow: batch scoring with a registered version."""

from __future__ import annotations

from pathlib import Path

from loopline.core.errors import LooplineError
from loopline.registry.versions import CHAMPION
from loopline.scoring.batch import BatchResult, score_file
from loopline.scoring.registered import load_version
from loopline.serving.schema import required_fields
from loopline.workspace import Workspace


def score_registered(
    workspace: Workspace,
    source: Path,
    target: Path,
    version: str | None = None,
    *,
    progress: bool = True,
) -> BatchResult:
    """Score a Parquet file of records with `version` (default: the champion), all cores."""
    registry = workspace.registry
    chosen = version or registry.alias_version(CHAMPION)
    if chosen is None:
        raise LooplineError(f"{registry.name} has no champion yet: run `make run` first")
    model = load_version(registry, chosen, alias="" if version else CHAMPION)
    required = required_fields(workspace.dataset.contract)
    return score_file(model, source, target, required, progress=progress)
