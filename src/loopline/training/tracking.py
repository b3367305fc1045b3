"""What every training run is tagged with: the code, data and settings that made it.

Timings and other measured values go to MLflow as metrics; these tags are what a rerun
of the same commit, data and params repeats exactly, and what ties a registered version
back to them.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

from loopline.core import tags
from loopline.data.datastore import pinned_md5
from loopline.data.splits import window_tags
from loopline.training.families import family_params
from loopline.workspace import Workspace

TIMINGS_DIR = Path("logs") / "timings"  # measured times of the last stage runs (not tracked)
PARENT_RUN_ENV = "LOOPLINE_PARENT_RUN_ID"  # a retrain's MLflow run: the pipeline's runs nest
LINEAGE_SECTIONS = ["seed", "dataset", "featurize", "train"]  # what shapes a trained model


def git_commit(root: Path = Path(), pipeline_outputs: tuple[str, ...] = ()) -> str:
    """HEAD's sha, with `+dirty` if tracked files changed; `unknown` outside git.

    Files the pipeline itself writes (dvc.lock, its metrics) do not count: after a run
    they differ from HEAD without any change to the code, data or params that made it.
    """

    def git(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=False)

    head = git("rev-parse", "HEAD")
    if head.returncode != 0:
        return "unknown"
    excluded = [f":(exclude){path}" for path in pipeline_outputs]
    dirty = git("status", "--porcelain", "--untracked-files=no", "--", ".", *excluded)
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def params_hash(workspace: Workspace, sections: list[str]) -> str:
    """Short sha256 of the params sections that shaped a result (families' as checked)."""
    params = workspace.params
    dumped = params.model_dump(mode="json", by_alias=True)
    dumped["train"] = {
        name: family_params(params, name).model_dump(mode="json") for name in params.train
    }
    chosen = {name: dumped[name] for name in sections}
    return hashlib.sha256(json.dumps(chosen, sort_keys=True).encode()).hexdigest()[:16]


def lineage_tags(workspace: Workspace, sections: list[str] = LINEAGE_SECTIONS) -> dict[str, str]:
    """Tags that tie a run to its code, data and configuration.

    The code is the checkout this process runs from (a stage runs in the project's folder,
    or in DVC's copy of it for an experiment), whatever folder the params file is in.
    """
    params, here = workspace.params, Path.cwd()
    metrics = params.paths.metrics
    inside = [str(metrics.relative_to(here))] if metrics.is_relative_to(here) else []
    outputs = ["dvc.lock", *inside]
    return {
        tags.GIT_COMMIT: git_commit(here, tuple(outputs)),
        tags.DATA_MD5: pinned_md5(params.paths.data_dvc) or "unpinned",
        tags.PARAMS_HASH: params_hash(workspace, sections),
        **window_tags(params.featurize.split),
    }
