"""The Workspace: everything one params file sets up, resolved once.

Every command, flow, the service, the replay and the benchmarks start the same way:

    workspace = Workspace.load(Path("params.yaml"))

and take what they need from it: the settings (`params`, with every location absolute),
the dataset and its time axis, the featurize stage's layout, and the stores (the model
registry, the prediction log, the monitor's state), each opened on first use. Relative
locations in a params file are read against that file's folder, wherever the command
runs: a stage under `dvc repro`, a retrain in a scratch folder, the service and the CLI
all see the same files.

A retrain or team mode needs a variant of the file: `write_params(target, overrides)`
writes this file's settings with dotted-key overrides to another place, relative paths
re-anchored so they still mean what they meant here.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import pandas as pd
import yaml

from loopline.core.io import atomic_path
from loopline.core.params import (
    Params,
    params_file,
    parse_params,
    read_params_source,
    read_params_yaml,
)
from loopline.data.datasets import get_dataset
from loopline.data.datasets.base import Dataset, read_tables
from loopline.data.time_axis import TimeAxis
from loopline.infra.job_store import JobStore
from loopline.infra.monitor_state import MonitorState
from loopline.infra.prediction_log import PredictionLog

if TYPE_CHECKING:
    from loopline.registry.versions import Registry

# Settings that name a place: a relative one is read against the params file's folder.
LOCATIONS = (
    "mlflow.artifact_root", "registry.ledger", "registry.cards", "serve.prediction_log",
    "jobs.store",
    "monitor.workspace", "monitor.reports", "monitor.state", "team.home", "team.artifacts",
    "team.params_file", "featurize.split.keys_file",
)  # fmt: skip
DVC_PARAMS = "params.yaml"  # the params file dvc.yaml's stages declare


@dataclass(frozen=True)
class FeaturizeLayout:
    """Where the featurize stage puts what it writes, under `paths.features`."""

    folder: Path
    SPLITS: ClassVar[tuple[str, str, str]] = ("train", "valid", "test")

    def examples(self, split: str) -> Path:
        """Raw records plus context columns of one split (what serving receives)."""
        return self.folder / "examples" / f"{split}.parquet"

    def features(self, split: str) -> Path:
        """Model-ready features plus context columns of one split."""
        return self.folder / "features" / f"{split}.parquet"

    @property
    def featurizer(self) -> Path:
        """The fitted feature tables (`loopline.scoring.features.FeatureTables`)."""
        return self.folder / "featurizer.json"


def _anchored(value: Any, root: Path) -> Any:
    """A location read against `root`: URLs and absolute paths stay as they are."""
    if value is None or "://" in str(value):
        return value
    return str(root / str(value))


def _get(raw: Mapping[str, Any], dotted: str) -> tuple[Mapping[str, Any] | None, str]:
    """The mapping holding the dotted key's last part (None if a section is missing)."""
    *sections, last = dotted.split(".")
    node: Any = raw
    for section in sections:
        node = node.get(section) if isinstance(node, Mapping) else None
    return (node if isinstance(node, Mapping) else None), last


def anchor_locations(raw: dict[str, Any], root: Path) -> dict[str, Any]:
    """`raw` (a params mapping, changed in place) with every location read against `root`."""
    raw["paths"] = {key: _anchored(value, root) for key, value in raw["paths"].items()}
    for dotted in LOCATIONS:
        holder, key = _get(raw, dotted)
        if holder is not None and key in holder:
            holder[key] = _anchored(holder[key], root)  # type: ignore[index]
    uri = raw["mlflow"]["tracking_uri"]
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        raw["mlflow"]["tracking_uri"] = f"sqlite:///{(root / uri.removeprefix('sqlite:///'))}"
    return raw


def set_dotted(raw: dict[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """`raw` (changed in place) with each dotted key of `overrides` set to its value."""
    for dotted, value in overrides.items():
        *sections, last = dotted.split(".")
        node = raw
        for section in sections:
            node = node.setdefault(section, {})
        node[last] = value
    return raw


class Workspace:
    """The settings, dataset, time axis, layout and stores of one params file."""

    def __init__(self, params_file: Path, params: Params) -> None:
        self.params_file = params_file
        self.root = params_file.parent
        self.params = params
        self.dataset: Dataset = get_dataset(params.dataset.name)
        self.axis = TimeAxis.of(self.dataset)
        self.layout = FeaturizeLayout(params.paths.features)

    @classmethod
    def load(cls, path: Path | None = None) -> Workspace:
        """The workspace of `path` (default: `LOOPLINE_PARAMS`, else ./params.yaml)."""
        path = params_file(path).resolve()
        raw, lines = read_params_source(path)
        return cls(path, parse_params(anchor_locations(raw, path.parent), str(path), lines))

    # -- what the settings say --------------------------------------------------------------

    @property
    def dvc_tracked(self) -> bool:
        """Whether DVC tracks this pipeline: the dataset is the one params.yaml names.

        dvc.yaml's stages declare params.yaml's keys, so another dataset's params file runs
        the same stage commands outside DVC's lock and cache.
        """
        tracked = self.root / DVC_PARAMS
        if not tracked.is_file():
            return False
        return read_params_yaml(tracked).get("dataset", {}).get("name") == self.params.dataset.name

    def tables(self) -> dict[str, pd.DataFrame]:
        """The raw tables of the dataset, read from `paths.data`."""
        return read_tables(self.params.paths.data, self.dataset.contract)

    def examples(self) -> pd.DataFrame:
        """The dataset's examples (records, time if any, target), from the raw tables."""
        return self.dataset.build_examples(self.tables(), self.params.dataset)

    def shared_state(self) -> dict[str, str]:
        """Overrides that point a copy of the pipeline (a retrain) at this workspace's stores.

        Its MLflow store, ledger and model cards, so the copy's runs and decisions land here.
        """
        return {
            "mlflow.tracking_uri": self.params.mlflow.tracking_uri,
            "mlflow.artifact_root": str(self.params.mlflow.artifact_root),
            "registry.ledger": str(self.params.registry.ledger),
            "registry.cards": str(self.params.registry.cards),
        }

    def with_overrides(
        self, overrides: Mapping[str, Any], folder: Path | None = None
    ) -> dict[str, Any]:
        """This params file's settings, as written, with dotted-key `overrides` applied.

        For a file in `folder` (default: this one's): elsewhere, relative locations are
        re-anchored at this file's folder, so they still mean what they mean here.
        """
        raw = read_params_yaml(self.params_file)
        if folder is not None and folder.resolve() != self.root:
            raw = anchor_locations(raw, self.root)
        return set_dotted(raw, overrides)

    def write_params(self, target: Path, overrides: Mapping[str, Any], header: str = "") -> Path:
        """Write `with_overrides(overrides)` as a params file at `target` (atomically).

        The result is checked as a params file before it replaces anything.
        """
        raw = self.with_overrides(overrides, target.parent)
        parse_params(raw, source=str(target))
        with atomic_path(target) as partial:
            partial.write_text(header + yaml.safe_dump(raw, sort_keys=False))
        return target

    # -- the stores, opened on first use -----------------------------------------------------

    def configure_tracking(self) -> str:
        """Point this process's MLflow at the workspace's store; the experiment id."""
        from loopline.infra.tracking import configure_mlflow  # noqa: PLC0415 - MLflow is slow

        return configure_mlflow(self.params.mlflow)

    @functools.cached_property
    def registry(self) -> Registry:
        """The registered model (MLflow pointed at this workspace's store first)."""
        from loopline.infra.ledger import open_ledger  # noqa: PLC0415 - MLflow is slow
        from loopline.registry.versions import Registry  # noqa: PLC0415

        self.configure_tracking()
        return Registry(self.params.registry, open_ledger(self.params.registry.ledger))

    @functools.cached_property
    def prediction_log(self) -> PredictionLog:
        """The service's prediction log (`serve.prediction_log`)."""
        return self.open_prediction_log()

    def open_prediction_log(self, commit_delay_ms: float = 0.0) -> PredictionLog:
        """A new handle on the prediction log (the service's own holds its commits back)."""
        serve = self.params.serve
        return PredictionLog(
            serve.prediction_log, self.dataset.record_fields(), self.dataset.key_columns,
            self.dataset.target_column, commit_delay_ms=commit_delay_ms,
            durability=serve.log_durability,
        )  # fmt: skip

    @functools.cached_property
    def job_store(self) -> JobStore:
        """The asynchronous prediction jobs (`jobs.store`)."""
        return JobStore(self.params.jobs.store)

    @functools.cached_property
    def monitor_state(self) -> MonitorState:
        """The monitor's state (`monitor.state`)."""
        return MonitorState(self.params.monitor.state)
