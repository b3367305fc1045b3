"""register stage: the best candidate becomes `challenger`; the rule decides on `champion`.

The candidate with the best primary metric on the validation window is registered as a
new version (the test window plays no part in the choice). It and the current champion
are then scored, through MLflow, on the test window, the newest labeled days that neither
was fitted or chosen on, and the promotion rule (registry section of params.yaml) decides.
Every decision goes to the ledger, the version's tags and a model card; `metrics/register.json`
(tracked by DVC) keeps only what a rerun repeats, the decision file and card in
`paths.registration` also keep the measured latency. For a dataset without a time column,
a sample of the training split is logged with the version's run: the monitor's drift
reference (`loopline.registry.reference`).
"""

from __future__ import annotations

import os
from pathlib import Path

import mlflow
import pandas as pd
from prefect import flow, get_run_logger, task

from loopline.core.errors import LooplineError
from loopline.core.io import atomic_path, read_json, write_json
from loopline.core.params import Params, load_params, params_file
from loopline.data.datasets import get_dataset
from loopline.infra.orchestration import run_stage
from loopline.promotion.card import CardFacts, render_card
from loopline.registry.reference import log_reference
from loopline.registry.versions import TEST_METRIC_TAG, Registry, judge_on_recent_window
from loopline.scoring.scorer import SCORER_DIR, scorer_digest
from loopline.training.tracking import (
    MODEL_URI_TAG,
    PARENT_RUN_ENV,
    RETRAIN_OUTCOME_TAGS,
    SCORER_DIGEST_TAG,
    configure_mlflow,
    lineage_tags,
)


def best_on_validation(params: Params) -> str:
    """The candidate family with the best primary metric on the validation window."""
    primary = params.registry.primary_metric
    valid = {
        family: read_json(params.paths.metrics / "train" / f"{family}.json")["valid"][primary]
        for family in params.evaluate.candidates
    }
    return max(params.evaluate.candidates, key=valid.__getitem__)


def training_run(family: str, params: Params) -> mlflow.entities.Run:
    """The MLflow run that logged this family's compiled scorer (found by its digest)."""
    digest = scorer_digest(params.paths.models / family / SCORER_DIR)
    runs = mlflow.search_runs(
        experiment_names=[params.mlflow.experiment],
        filter_string=f"tags.`{SCORER_DIGEST_TAG}` = '{digest}'",
        order_by=["attributes.start_time DESC"], max_results=1, output_format="list",
    )  # fmt: skip
    if not runs:
        raise LooplineError(
            f"no MLflow run in {params.mlflow.tracking_uri} logged the {family} scorer in "
            f"{params.paths.models / family} (digest {digest[:12]}): run its train stage again"
        )
    return runs[0]


@task
def register_best(params: Params, registry: Registry) -> tuple[str, str, dict]:
    """Register the best candidate; returns (version, family, its test metrics)."""
    family = best_on_validation(params)
    run = training_run(family, params)
    test_metrics = read_json(params.paths.metrics / "evaluate.json")[family]
    if not get_dataset(params.dataset.name).has_time:
        train = pd.read_parquet(params.paths.features / "examples" / "train.parquet")
        log_reference(
            mlflow.MlflowClient(), run.info.run_id, train, params.monitor.reference_rows,
            params.seed,
        )  # fmt: skip
    tags = lineage_tags(params, ["seed", "dataset", "featurize", "train"]) | {
        "loopline.family": family,
        **{f"{TEST_METRIC_TAG}{k}": str(v) for k, v in test_metrics.items()},
    }
    version = registry.register(run.data.tags[MODEL_URI_TAG], run.info.run_id, tags)
    return version, family, test_metrics


@task
def decide(params: Params, registry: Registry, version: str) -> tuple:
    """Re-score challenger and champion on the most recent labeled window; apply the rule."""
    dataset = get_dataset(params.dataset.name)
    return judge_on_recent_window(registry, version, params, dataset, params.registry.dry_run)


@flow(name="register")
def register(params_path: Path | None = None) -> None:
    """Register the best candidate and decide on its promotion."""
    params = load_params(params_file(params_path))
    configure_mlflow(params.mlflow)
    registry = Registry(params.registry)
    version, family, test_metrics = register_best(params, registry)
    gate, decision = decide(params, registry, version)
    tags = registry.client.get_model_version(registry.name, version).tags
    wording = get_dataset(params.dataset.name).wording
    card = render_card(
        CardFacts(registry.name, version, family, tags, test_metrics, decision, gate, wording)
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
    if retrain_run := os.environ.get(PARENT_RUN_ENV):  # a retrain waits for this answer
        outcome = {"version": version} | {k: decision[k] for k in ("action", "champion")}
        for key, tag in RETRAIN_OUTCOME_TAGS.items():
            mlflow.MlflowClient().set_tag(retrain_run, tag, str(outcome[key]))
    get_run_logger().info(
        "version %s (%s): %s\n%s", version, family, decision["action"], "\n".join(gate.reasons())
    )


if __name__ == "__main__":
    run_stage(register)
