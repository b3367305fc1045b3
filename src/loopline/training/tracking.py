"""MLflow: where runs go, what every run is tagged with, and how a model is logged.

The logged model is a pyfunc that takes raw records (the contract's record fields; the
nullable ones may be left out) and returns `probability` and `label`. Its only artifact is
the compiled scorer (feature tables + estimator in safe formats, `loopline.scoring`), so
`mlflow models serve` and `mlflow.pyfunc.spark_udf` run exactly what Loopline serves, and
nothing in the model is unpickled.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, Schema

from loopline.core.params import FractionSplit, KeyedSplit, MlflowParams, Params, SplitParams
from loopline.data.contract import DataContract
from loopline.data.datastore import pinned_md5
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


MODEL_URI_TAG = "loopline.model_uri"  # on a train run: the model it logged
SCORER_DIGEST_TAG = "loopline.scorer_digest"  # ... and the digest of its compiled scorer
TIMINGS_DIR = Path("logs") / "timings"  # measured times of the last stage runs (not tracked)
PARENT_RUN_ENV = "LOOPLINE_PARENT_RUN_ID"  # a retrain's MLflow run: the pipeline's runs nest
RETRAIN_OUTCOME_TAGS = {  # ... and its register stage tags it with the decision
    "version": "loopline.retrain.version",
    "action": "loopline.retrain.outcome",
    "champion": "loopline.retrain.champion",
}


def window_tag(split: str) -> str:
    """The lineage tag holding a split's window (`train`, `valid`, `test`): "first..last"."""
    return f"loopline.{split}_window"


def tracking_uri_at(uri: str, root: Path) -> str:
    """`uri` with a relative SQLite path resolved against `root` (others unchanged)."""
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        return f"sqlite:///{(root / uri.removeprefix('sqlite:///')).resolve()}"
    return uri


def configure_mlflow(params: MlflowParams, root: Path = Path()) -> str:
    """Point MLflow at the configured store and its experiment, which new runs then join.

    A new experiment of a local store gets `params.artifact_root`; on a tracking server
    (http://...) artifacts go to the server's own store (`mlflow server
    --artifacts-destination`), shared by every client. Relative paths are resolved against
    `root`. Returns the experiment id.
    """
    uri = tracking_uri_at(params.tracking_uri, root)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    experiment = mlflow.get_experiment_by_name(params.experiment)
    if experiment is not None:
        experiment_id = experiment.experiment_id
    elif uri.startswith(("http://", "https://")):
        experiment_id = mlflow.create_experiment(params.experiment)
    else:
        artifacts = (root / params.artifact_root).resolve()
        artifacts.mkdir(parents=True, exist_ok=True)
        experiment_id = mlflow.create_experiment(
            params.experiment, artifact_location=artifacts.as_uri()
        )
    mlflow.set_experiment(experiment_id=experiment_id)  # runs go there, not to "Default"
    return experiment_id


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


def params_hash(params: Params, sections: list[str]) -> str:
    """Short sha256 of the params sections that shaped a result."""
    dumped = params.model_dump(mode="json", by_alias=True)
    chosen = {name: dumped[name] for name in sections}
    return hashlib.sha256(json.dumps(chosen, sort_keys=True).encode()).hexdigest()[:16]


def lineage_tags(params: Params, sections: list[str], root: Path = Path()) -> dict[str, str]:
    """Tags that tie a run to its code, data and configuration."""
    return {
        "loopline.git_commit": git_commit(root, ("dvc.lock", str(params.paths.metrics))),
        "loopline.data_md5": pinned_md5(root / params.paths.data_dvc) or "unpinned",
        "loopline.params_hash": params_hash(params, sections),
        **split_tags(params.featurize.split),
    }


ARRIVALS = "arrivals "  # a test window of labeled arrivals: "arrivals <first>..<last>"


def split_tags(split: SplitParams | FractionSplit | KeyedSplit) -> dict[str, str]:
    """The split a model was fitted on: its date windows, fractions, or judged arrivals."""
    if isinstance(split, FractionSplit):
        return {window_tag(name): f"{f:g}" for name, f in split.fractions().items()}
    if isinstance(split, KeyedSplit):
        return {window_tag("train"): "by key", window_tag("valid"): "by key",
                window_tag("test"): f"{ARRIVALS}{split.judged_arrivals}"}  # fmt: skip
    return {window_tag(name): str(w) for name, w in split.windows().items()}


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
