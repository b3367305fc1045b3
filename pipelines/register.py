"""register stage: the best candidate becomes `challenger`; the rule decides on `champion`.

The candidate with the best primary metric on the validation split is registered as a
new version (the test split plays no part in the choice). It and the current champion
are then scored, through MLflow, on the test split's rows that neither was fitted or
chosen on, and the promotion rule (registry section of params.yaml) decides
(`loopline.promotion.gate`). Every decision goes to the ledger, the version's tags and a
model card; `metrics/register.json` (tracked by DVC) keeps only what a rerun repeats, the
decision file and card in `paths.registration` also keep the measured latency.

The registry lives in MLflow, outside DVC, so the stage also writes a receipt of what it
registered (`registered.json`: model, family, scorer digest), a DVC output kept in the
cache and not in git. A clean clone has none, so `dvc repro` registers there too: with
only committed outputs, DVC would find the stage up to date and leave the clone's fresh
registry empty, with nothing to serve. Where the
time axis asks for it (a dataset placed by arrival), a sample of the training split is
logged with the version's run as the monitor's drift reference.
"""

from __future__ import annotations

import os
from pathlib import Path

import mlflow
import pandas as pd
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from loopline.core import tags
from loopline.core.errors import LooplineError
from loopline.core.io import atomic_path, read_json, write_json
from loopline.infra.prefect import run_stage
from loopline.promotion.card import CardFacts, render_card
from loopline.promotion.gate import judge_on_recent_window
from loopline.promotion.rule import GateResult
from loopline.registry.reference import log_reference
from loopline.scoring.scorer import SCORER_DIR, scorer_digest
from loopline.training.tracking import PARENT_RUN_ENV, lineage_tags
from loopline.workspace import Workspace

RECEIPT = "registered.json"  # what the stage registered (a DVC output, see above)


def best_on_validation(workspace: Workspace) -> str:
    """The candidate family with the best primary metric on the validation split."""
    params = workspace.params
    primary = params.registry.primary_metric
    valid = {
        family: read_json(params.paths.metrics / "train" / f"{family}.json")["valid"][primary]
        for family in params.evaluate.candidates
    }
    return max(params.evaluate.candidates, key=valid.__getitem__)


def training_run(family: str, workspace: Workspace) -> mlflow.entities.Run:
    """The MLflow run that logged this family's compiled scorer (found by its digest)."""
    params = workspace.params
    digest = scorer_digest(params.paths.models / family / SCORER_DIR)
    runs = mlflow.search_runs(
        experiment_names=[params.mlflow.experiment],
        filter_string=f"tags.`{tags.SCORER_DIGEST}` = '{digest}'",
        order_by=["attributes.start_time DESC"], max_results=1, output_format="list",
    )  # fmt: skip
    if not runs:
        raise LooplineError(
            f"no MLflow run in {params.mlflow.tracking_uri} logged the {family} scorer in "
            f"{params.paths.models / family} (digest {digest[:12]}): run its train stage again"
        )
    return runs[0]


@task(cache_policy=NO_CACHE)
def register_best(workspace: Workspace) -> tuple[str, str, dict]:
    """Register the best candidate; returns (version, family, its test metrics)."""
    params = workspace.params
    family = best_on_validation(workspace)
    run = training_run(family, workspace)
    test_metrics = read_json(params.paths.metrics / "evaluate.json")[family]
    train = pd.read_parquet(workspace.layout.examples("train"))
    reference = workspace.axis.reference_to_log(train, params.monitor.reference_rows, params.seed)
    if reference is not None:
        log_reference(mlflow.MlflowClient(), run.info.run_id, reference)
    version_tags = lineage_tags(workspace) | {
        tags.FAMILY: family,
        **{f"{tags.TEST_METRIC}{k}": str(v) for k, v in test_metrics.items()},
    }
    registry = workspace.registry
    version = registry.register(run.data.tags[tags.MODEL_URI], run.info.run_id, version_tags)
    return version, family, test_metrics


@task(cache_policy=NO_CACHE)
def decide(workspace: Workspace, version: str) -> tuple:
    """Score challenger and champion on the freshest labeled window; apply the rule.

    A challenger that passes enters a canary when `canary.release` says so.
    """
    canary = workspace.params.canary
    return judge_on_recent_window(
        workspace, version, workspace.params.registry.dry_run,
        canary if canary.release == "canary" else None,
    )  # fmt: skip


def write_records(
    workspace: Workspace,
    version: str,
    *,
    family: str,
    gate: GateResult,
    decision: dict,
    test_metrics: dict,
) -> None:
    """The model card (everywhere it is kept), the decision file and the stage metrics."""
    params, registry = workspace.params, workspace.registry
    version_tags = registry.version_tags(version)
    card = render_card(CardFacts(
        registry.name, version, family, version_tags, test_metrics, decision, gate,
        workspace.dataset.wording,
    ))  # fmt: skip
    out = params.paths.registration
    for path in (out / "model_card.md", params.registry.cards / f"{registry.name}-v{version}.md"):
        with atomic_path(path) as tmp:
            tmp.write_text(card)
    mlflow.MlflowClient().log_text(version_tags[tags.RUN_ID], card, f"model_card_v{version}.md")
    write_json(
        {"version": version, "family": family, **decision, "gate": gate.as_dict()},
        out / "decision.json",
    )
    write_json(
        {"version": int(version), "promoted": int(decision["action"] == "promote"),
         **gate.challenger},
        params.paths.metrics / "register.json",
    )  # fmt: skip
    digest = scorer_digest(params.paths.models / family / SCORER_DIR)
    receipt = {"model": registry.name, "family": family, "scorer_digest": digest}
    write_json(receipt, out / RECEIPT)  # no version: a rerun elsewhere may number it anew


@flow(name="register")
def register(params_path: Path | None = None) -> None:
    """Register the best candidate and decide on its promotion."""
    workspace = Workspace.load(params_path)
    workspace.configure_tracking()  # the training runs are searched before the registry opens
    version, family, test_metrics = register_best(workspace)
    gate, decision = decide(workspace, version)
    write_records(
        workspace, version, family=family, gate=gate, decision=decision, test_metrics=test_metrics
    )
    if retrain_run := os.environ.get(PARENT_RUN_ENV):  # a retrain waits for this answer
        outcome = {"version": version} | {k: decision[k] for k in ("action", "champion")}
        for key, tag in tags.RETRAIN_OUTCOME.items():
            mlflow.MlflowClient().set_tag(retrain_run, tag, str(outcome[key]))
    get_run_logger().info(
        "version %s (%s): %s\n%s", version, family, decision["action"], "\n".join(gate.reasons())
    )


if __name__ == "__main__":
    run_stage(register)
