"""Model families as plug-ins: each module of this package that defines `FAMILY` is one.

A family registers, in its own module, everything Loopline needs to know about it:

* `params`: the pydantic model of its section of params.yaml (`train.<name>`);
* `train`: how it fits on the featurize stage's feature sets (`FeatureSets`) and returns
  an estimator with `predict_proba`;
* `export`: how that estimator is written into the compiled scorer, in one of the safe
  formats of `loopline.scoring.formats` (which also loads it back for serving).

Adding a family is adding a module here, its section to the params files and its name to
dvc.yaml's `train` list; nothing else names the families. `families()` finds them.
"""

from __future__ import annotations

import functools
import importlib
import pkgutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loopline.core.errors import ConfigError
from loopline.core.params import Params, Section
from loopline.scoring.features import FeatureTables
from loopline.training.feature_sets import FeatureSets
from loopline.workspace import FeaturizeLayout


@dataclass(frozen=True)
class TrainContext:
    """What a family's training may need besides the data and its settings."""

    seed: int
    features: FeaturizeLayout | None = None  # where the feature sets are (torchrun reads them)
    env: Mapping[str, str] = field(default_factory=dict)  # for child processes: MLflow's run


@dataclass(frozen=True)
class Fitted:
    """A fitted estimator and what its training reported (epochs, throughput...)."""

    estimator: Any  # predict_proba(features) -> (rows, 2)
    report: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Family:
    """One model family: its settings, how it trains, how it is exported."""

    name: str
    summary: str  # one line: what it is
    params: type[Section]
    train: Callable[[FeatureSets, Any, TrainContext], Fitted]
    export: Callable[[Any, FeatureTables, Path], dict[str, Any]]
    distributed: bool = False  # trains in processes of its own (torchrun), not the caller's


@functools.cache
def families() -> dict[str, Family]:
    """Every registered family by name, in module order."""
    found: dict[str, Family] = {}
    for module in pkgutil.iter_modules(__path__):
        family = getattr(importlib.import_module(f"{__name__}.{module.name}"), "FAMILY", None)
        if isinstance(family, Family):
            found[family.name] = family
    return found


def get_family(name: str) -> Family:
    """The family registered as `name` (ConfigError naming the known ones otherwise)."""
    known = families()
    if name not in known:
        raise ConfigError(f"unknown model family {name!r}; the families are {sorted(known)}")
    return known[name]


def family_params(params: Params, name: str) -> Any:
    """The family's own section, `train.<name>`, checked by its params model."""
    return params.checked(get_family(name).params, "train", name)


def check_families(params: Params) -> dict[str, Any]:
    """Every `train` section checked by its family, and every candidate a trained family.

    What `loopline run` checks before the pipeline starts: a misspelled key fails at once,
    named by file and line, instead of when its stage comes.
    """
    checked = {name: family_params(params, name) for name in params.train}
    missing = [name for name in params.evaluate.candidates if name not in checked]
    if missing:
        raise ConfigError(
            f"evaluate.candidates names {missing}, which have no train section; "
            f"trained: {sorted(checked)}"
        )
    return checked
