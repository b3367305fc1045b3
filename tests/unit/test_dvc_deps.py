"""dvc.yaml's deps follow the code: every project module a stage's command imports is a dep.

A stage whose deps miss a module it runs keeps stale outputs under `dvc repro` when that
module changes (change how a metric is computed, and the old metrics stay). The imports
are read from the code itself (grimp, the graph import-linter checks), not from a list.
"""

from __future__ import annotations

import importlib.util
from functools import cache
from pathlib import Path

import grimp
import pytest
import yaml

from tests.conftest import ROOT

STAGE_SCRIPT = "pipelines/stage.sh"
# Packages that find their modules at run time (the model families' plug-in discovery):
# importing one runs every module in its folder, so the folder is the dependency.
PLUGIN_PACKAGES = ("loopline.training.families",)


@cache
def _graph() -> grimp.ImportGraph:
    return grimp.build_graph("loopline", "pipelines", include_external_packages=False)


def _stages() -> dict[str, dict]:
    """Every stage of dvc.yaml (a `foreach` stage once: its items share cmd and deps)."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    return {name: stage.get("do", stage) for name, stage in stages.items()}


def _module(command: str) -> str:
    """The Python module a stage command runs (`sh pipelines/stage.sh <module> [args]`)."""
    words = command.split()
    assert STAGE_SCRIPT in words, f"stage command {command!r} does not go through {STAGE_SCRIPT}"
    return words[words.index(STAGE_SCRIPT) + 1]


def _source(module: str) -> Path:
    """The file a module is read from, relative to the checkout (a package: its folder)."""
    spec = importlib.util.find_spec(module)
    assert spec is not None, module
    assert spec.origin is not None, module
    origin = Path(spec.origin).resolve().relative_to(ROOT)
    return origin.parent if module in PLUGIN_PACKAGES else origin


def _with_parents(module: str) -> set[str]:
    """A module and the packages above it (importing it runs each one's `__init__`)."""
    parts = module.split(".")
    return {".".join(parts[:end]) for end in range(1, len(parts) + 1)}


def imported_sources(module: str) -> set[Path]:
    """`module` and every project module it imports, directly or not, as checkout paths."""
    modules = _graph().find_upstream_modules(module) | {module}
    return {_source(name) for found in modules for name in _with_parents(found)}


def missing_deps(module: str, deps: list[str]) -> list[str]:
    """The sources `module` imports that no dep (a file, or a folder above it) covers."""
    listed = [Path(dep) for dep in deps]
    return sorted(
        str(source)
        for source in imported_sources(module)
        if not any(source == dep or source.is_relative_to(dep) for dep in listed)
    )


@pytest.mark.parametrize("stage", sorted(_stages()))
def test_every_module_a_stage_runs_is_one_of_its_deps(stage: str) -> None:
    declared = _stages()[stage]
    missing = missing_deps(_module(declared["cmd"]), declared["deps"])
    assert not missing, f"dvc.yaml stage {stage!r} runs code its deps do not list: {missing}"


def test_the_check_goes_red_when_a_dep_is_dropped() -> None:
    """Drop the training package from the train stage's deps: its modules are missed."""
    declared = _stages()["train"]
    deps = [dep for dep in declared["deps"] if dep != "src/loopline/training"]
    missing = missing_deps(_module(declared["cmd"]), deps)
    assert "src/loopline/training/metrics.py" in missing
    assert "src/loopline/training/families" in missing  # the plug-ins, as one folder


@pytest.mark.parametrize("stage", sorted(_stages()))
def test_every_stage_depends_on_the_script_that_runs_it(stage: str) -> None:
    """stage.sh chooses the Python and pins the BLAS kernel: both shape what a stage writes."""
    assert STAGE_SCRIPT in _stages()[stage]["deps"], f"stage {stage!r} does not list {STAGE_SCRIPT}"


def test_the_plots_speak_of_the_positive_class_not_of_one_datasets_target() -> None:
    """dvc.yaml is one file for every dataset: "observed late rate" was wrong for churn."""
    from loopline.data.datasets import _DATASETS  # noqa: PLC0415 - the registry, read here only

    plots = yaml.safe_load((ROOT / "dvc.yaml").read_text())["plots"]
    text = " ".join(
        str(value) for plot in plots for spec in plot.values() for value in spec.values()
    ).lower()
    for dataset in _DATASETS.values():
        words = dataset.wording
        for word in (words.target, words.positive, words.negative, words.record):
            assert word.lower().replace("_", " ") not in text, (dataset.name, word)
