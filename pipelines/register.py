"""register stage: the best candidate becomes `challenger`; the rule decides on `champion`.

The candidate with the best primary metric on the test window is registered as a new
version. It and the current champion are then re-scored, through MLflow, on the most
recent labeled window, and the promotion rule (registry section of params.yaml) decides.
Every decision goes to the ledger, the version's tags and a model card.
"""

from __future__ import annotations

from pathlib import Path

import mlflow
from prefect import flow, get_run_logger, task

from loopline.config import Params, load_params
from loopline.datasets import get_dataset
from loopline.io import atomic_path, read_json, write_json
from loopline.model_card import CardFacts, render_card
from loopline.orchestration import run_stage
from loopline.registry import TEST_METRIC_TAG, Registry, judge_on_recent_window
from loopline.tracking import configure_mlflow, lineage_tags


@task
def register_best(params: Params, registry: Registry) -> tuple[str, str, dict]:
    """Register the best candidate; returns (version, family, its test metrics)."""
    results = read_json(params.paths.metrics / "evaluate.json")
    primary = params.registry.primary_metric
    family = max(params.evaluate.candidates, key=lambda name: results[name][primary])
    run = read_json(params.paths.models / family / "run.json")
    tags = lineage_tags(params, ["seed", "dataset", "featurize", "train"]) | {
        "loopline.family": family,
        **{f"{TEST_METRIC_TAG}{k}": str(v) for k, v in results[family].items()},
    }
    return registry.register(run["model_uri"], run["run_id"], tags), family, results[family]


@task
def decide(params: Params, registry: Registry, version: str) -> tuple:
    """Re-score challenger and champion on the most recent labeled window; apply the rule."""
    dataset = get_dataset(params.dataset.name)
    return judge_on_recent_window(registry, version, params, dataset, params.registry.dry_run)


@flow(name="register")
def register(params_path: Path = Path("params.yaml")) -> None:
    """Register the best candidate and decide on its promotion."""
    params = load_params(params_path)
    configure_mlflow(params.mlflow)
    registry = Registry(params.registry)
    version, family, test_metrics = register_best(params, registry)
    gate, decision = decide(params, registry, version)
    tags = registry.client.get_model_version(registry.name, version).tags
    card = render_card(
        CardFacts(registry.name, version, family, tags, test_metrics, decision, gate)
    )
    out = params.paths.registration
    for path in (out / "model_card.md", params.registry.cards / f"{registry.name}-v{version}.md"):
        with atomic_path(path) as tmp:
            tmp.write_text(card)
    mlflow.MlflowClient().log_text(tags["loopline.run_id"], card, f"model_card_v{version}.md")
    write_json(
        {"version": version, "family": family, **decision, "gate": gate.as_dict()},
        out / "decision.json",
    )
    write_json(
        {
            "version": int(version),
            "promoted": int(decision["action"] == "promote"),
            **gate.challenger,
        },
        params.paths.metrics / "register.json",
    )
    get_run_logger().info(
        "version %s (%s): %s\n%s", version, family, decision["action"], "\n".join(gate.reasons())
    )


if __name__ == "__main__":
    run_stage(register)
