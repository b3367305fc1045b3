"""The registry against a real MLflow store: the promotion rule end to end, the ledger,
rollback, dry runs, atomic alias moves, and the logged model scoring raw records."""

from __future__ import annotations

import itertools
import multiprocessing
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import mlflow
import numpy as np
import pandas as pd
import pytest

from loopline.core.errors import LooplineError
from loopline.core.params import Params, RegistryParams
from loopline.data.datasets.base import Dataset
from loopline.infra.ledger import open_ledger
from loopline.infra.tracking import configure_mlflow
from loopline.promotion.gate import apply_rule, collect_evidence, judge_on_recent_window
from loopline.registry.lock import RegistryLock
from loopline.registry.versions import CHALLENGER, CHAMPION, ChampionMovedError, Registry
from loopline.training.families import TrainContext, family_params, logistic
from loopline.training.families import xgboost as xgb
from loopline.training.feature_sets import FeatureSets, load_feature_sets
from loopline.training.train import train_family
from loopline.workspace import Workspace
from tests.builders import NotCompiled, log_compiled

pytestmark = pytest.mark.slow
SPAWN = multiprocessing.get_context("spawn")  # each process its own MLflow client
R = TypeVar("R")


@pytest.fixture(scope="module")
def world(
    tmp_path_factory: pytest.TempPathFactory,
    small_features_dir: Path,
    fast_params: Params,
    dataset: Dataset,
) -> dict:
    """An MLflow store with three logged models, all real and compiled: strong (XGBoost),
    weak (the same XGBoost stopped after a few shallow trees) and useless (a logistic
    regression trained on shuffled labels)."""
    root = tmp_path_factory.mktemp("mlflow")
    tracking_uri = f"sqlite:///{root}/mlflow.db"
    registry_params = fast_params.registry.model_copy(
        update={
            "floors": {"roc_auc": 0.52}, "min_pr_auc_lift": 1.0,
            "slice_min_rows": 150, "bootstrap_samples": 60,
            "ledger": root / "ledger.jsonl", "cards": root / "cards",
        }
    )  # fmt: skip
    mlflow_params = fast_params.mlflow.model_copy(
        update={"tracking_uri": tracking_uri, "artifact_root": root / "mlruns"}
    )
    configure_mlflow(mlflow_params)
    data = load_feature_sets(small_features_dir)
    xgb_params = family_params(fast_params, "xgboost")
    strong = train_family("xgboost", data, xgb_params, seed=fast_params.seed)
    stunted = {"n_estimators": 3, "max_depth": 2, "early_stopping_rounds": 3}
    weak = xgb.train(data, xgb_params.model_copy(update=stunted), TrainContext(seed=0)).estimator
    shuffled = np.random.default_rng(0).permutation(data.y["train"])
    noise = FeatureSets(data.tables, data.x, {**data.y, "train": shuffled})
    logistic_params = family_params(fast_params, "logistic")
    useless = logistic.train(noise, logistic_params, TrainContext(seed=0)).estimator
    estimators = {
        "strong": ("xgboost", strong.estimator, strong.threshold),
        "weak": ("xgboost", weak, 0.5),
        "useless": ("logistic", useless, 0.5),
    }
    examples = pd.read_parquet(small_features_dir / "examples" / "valid.parquet")
    logged = {
        name: log_compiled(
            name,
            family,
            estimator,
            data=data,
            dataset=dataset,
            examples=examples,
            root=root,
            threshold=threshold,
        )
        for name, (family, estimator, threshold) in estimators.items()
    }
    uris = {name: (model.uri, model.run_id) for name, model in logged.items()}
    recent = pd.read_parquet(small_features_dir / "examples" / "test.parquet")
    paths = fast_params.paths.model_copy(update={"features": small_features_dir})
    pipeline = fast_params.model_copy(
        update={"paths": paths, "registry": registry_params, "mlflow": mlflow_params}
    )
    return {
        "params": registry_params, "uris": uris, "models": logged, "recent": recent,
        "pipeline": pipeline, "tracking_uri": tracking_uri,
    }  # fmt: skip


def _registry(params: RegistryParams) -> Registry:
    """The registry of these settings, with their own ledger (MLflow already pointed)."""
    return Registry(params, open_ledger(params.ledger))


def _register_and_decide(
    registry: Registry, world: dict, name: str, dataset: Dataset, dry_run: bool = False
) -> tuple:
    uri, run_id = world["uris"][name]
    version = registry.register(uri, run_id, {"loopline.family": name})
    champion = registry.alias_version(CHAMPION)
    evidence = collect_evidence(
        registry,
        version,
        champion,
        world["recent"],
        record_columns=dataset.record_columns(),
        target_column="late",
        slice_columns=dataset.slice_columns,
    )
    gate, entry = apply_rule(registry, version, evidence, seed=0, dry_run=dry_run, faced=champion)
    return version, gate, entry


def _own_model(world: dict, tmp_path: Path, name: str, **rule: float) -> RegistryParams:
    """Registry settings for a model of this test's own (own versions, aliases, ledger)."""
    return world["params"].model_copy(
        update={"model_name": name, "ledger": tmp_path / "l.jsonl", **rule}
    )


def test_the_promotion_rule_end_to_end(world: dict, dataset: Dataset) -> None:
    """first model / better / worse / dry run / rollback twice / forced promotion."""
    registry = _registry(world["params"])

    v1, gate, entry = _register_and_decide(registry, world, "weak", dataset)
    assert gate.passed
    assert entry["action"] == "promote"
    assert entry["previous_champion"] is None
    assert registry.alias_version(CHAMPION) == v1

    v2, gate, entry = _register_and_decide(registry, world, "strong", dataset)
    assert gate.passed, gate.reasons()
    assert gate.difference["difference"] > 0.002
    assert registry.alias_version(CHAMPION) == v2

    v3, gate, entry = _register_and_decide(registry, world, "useless", dataset)
    assert not gate.passed
    assert entry["action"] == "reject"
    assert registry.alias_version(CHAMPION) == v2  # a rejection leaves the champion alone
    assert registry.alias_version(CHALLENGER) == v3

    v4, gate, entry = _register_and_decide(registry, world, "strong", dataset, dry_run=True)
    assert entry["action"] == "dry-run"
    assert registry.alias_version(CHAMPION) == v2

    assert registry.rollback("v2 misbehaves")["champion"] == v1
    assert registry.alias_version(CHAMPION) == v1
    with pytest.raises(LooplineError, match="first champion"):
        registry.rollback("again")
    registry.force_promote(v2, "incident resolved")
    assert registry.alias_version(CHAMPION) == v2

    actions = [(e["action"], e["version"]) for e in registry.ledger.entries()]
    assert actions == [
        ("promote", v1),
        ("promote", v2),
        ("reject", v3),
        ("dry-run", v4),
        ("rollback", v1),
        ("promote", v2),
    ]
    tags = registry.client.get_model_version(registry.name, v3).tags
    assert tags["loopline.decision"] == "reject"
    assert "FAIL beats champion" in tags["loopline.checks"]


def test_rollback_walks_back_through_promotions(
    world: dict, dataset: Dataset, tmp_path: Path
) -> None:
    params = _own_model(world, tmp_path, "walk-back", margin=-1.0)
    registry = _registry(params)
    versions = [registry.register(*world["uris"][name], {}) for name in ("weak", "strong", "weak")]
    for version in versions:
        registry.force_promote(version, "setup")
    assert registry.rollback("r1")["champion"] == versions[1]
    assert registry.rollback("r2")["champion"] == versions[0]


def test_readers_always_see_a_champion_while_it_moves(world: dict, tmp_path: Path) -> None:
    """Alias moves are atomic for readers: resolving champion never fails mid-move."""
    params = _own_model(world, tmp_path, "atomic")
    registry = _registry(params)
    first = registry.register(*world["uris"]["weak"], {})
    second = registry.register(*world["uris"]["strong"], {})
    registry.force_promote(first, "start")
    seen, errors, stop = set(), [], threading.Event()

    def read() -> None:
        reader = _registry(params)
        while not stop.is_set():
            try:
                seen.add(reader.alias_version(CHAMPION))
            except Exception as error:
                errors.append(error)

    threads = [threading.Thread(target=read) for _ in range(3)]
    for thread in threads:
        thread.start()
    for i in range(15):
        registry.force_promote(second if i % 2 == 0 else first, "flip")
    stop.set()
    for thread in threads:
        thread.join()
    assert not errors
    assert seen <= {first, second}
    assert None not in seen


def test_the_logged_model_scores_raw_records_like_the_compiled_scorer(
    world: dict, dataset: Dataset
) -> None:
    """`mlflow.pyfunc` (what `mlflow models serve` runs) gives the scorer's answers, and
    takes records without their optional fields, as /predict does."""
    loaded = mlflow.pyfunc.load_model(world["uris"]["strong"][0])
    scorer = world["models"]["strong"].scorer
    records = world["recent"][dataset.record_columns()]
    scored = loaded.predict(records)
    np.testing.assert_allclose(
        scored["probability"].to_numpy(), scorer.score_frame(records)["probability"], rtol=1e-12
    )
    assert list(scored.columns) == ["probability", "label"]
    schema = loaded.metadata.get_input_schema()
    assert schema.input_names() == dataset.record_columns()
    optional = [c.name for c in schema.inputs if not c.required]
    assert "tailnum" in optional
    assert "wind_gust" in optional
    without = loaded.predict(records.drop(columns=optional).head(20))
    with_nulls = scorer.score_frame(records.head(20).assign(**dict.fromkeys(optional, None)))
    np.testing.assert_allclose(without["probability"], with_nulls["probability"], rtol=1e-12)


def test_a_decision_refuses_a_champion_that_moved_after_the_evidence(
    world: dict, dataset: Dataset, tmp_path: Path
) -> None:
    """Evidence gathered against v1; v3 became champion meanwhile: nothing moves."""
    params = _own_model(world, tmp_path, "moved", margin=-1.0)
    registry = _registry(params)
    v1, v2, v3 = (registry.register(*world["uris"][n], {}) for n in ("weak", "strong", "weak"))
    registry.force_promote(v1, "setup")
    evidence = collect_evidence(
        registry, v2, v1, world["recent"], record_columns=dataset.record_columns(),
        target_column="late", slice_columns=dataset.slice_columns,
    )  # fmt: skip
    registry.force_promote(v3, "another operator")
    with pytest.raises(ChampionMovedError, match="from 1 to 3"):
        apply_rule(registry, v2, evidence, seed=0, dry_run=False, faced=v1)
    assert registry.alias_version(CHAMPION) == v3
    assert [e["action"] for e in registry.ledger.entries()] == ["promote", "promote"]


def test_a_canary_steps_is_promoted_and_a_second_one_rolled_back(
    world: dict, tmp_path: Path
) -> None:
    """The canary lives in one registry tag: started against the champion it faces,
    stepped, promoted (the alias moves, the tag goes); a second one rolled back (the
    champion stays). Each decision is one ledger entry, and a stale or raced judgement
    changes nothing."""
    registry = _registry(_own_model(world, tmp_path, "canaries"))
    v1, v2, v3 = (registry.register(*world["uris"][n], {}) for n in ("weak", "strong", "weak"))
    registry.force_promote(v1, "setup")
    assert registry.canary() is None
    with pytest.raises(ChampionMovedError):
        registry.start_canary(v2, faced=v3, share=0.05, reason="gate passed", evidence={})
    registry.start_canary(v2, faced=v1, share=0.05, reason="gate passed",
                          evidence={"checks": ["PASS beats champion"]})  # fmt: skip
    first = registry.canary()
    assert (first.version, first.champion, first.step, first.share) == (v2, v1, 0, 0.05)
    assert registry.tag(v2, "loopline.decision") == "canary-start"

    hold = registry.decide_canary(first, "hold", "undecided", {"pairs": 400})
    assert hold["action"] == "canary-hold"
    assert hold["pairs"] == 400
    registry.decide_canary(first, "step", "guardrails clean", {}, share=0.25)
    stepped = registry.canary()
    assert (stepped.step, stepped.share, stepped.started_at) == (1, 0.25, first.started_at)
    with pytest.raises(LooplineError, match="changed while it was judged"):
        registry.decide_canary(first, "promote", "stale", {})  # judged before the step
    entry = registry.decide_canary(stepped, "promote", "better", {"interval": [-0.02, -0.01]})
    assert entry["action"] == "promote"
    assert entry["previous_champion"] == v1
    assert registry.alias_version(CHAMPION) == v2
    assert registry.canary() is None
    assert registry.ledger_champions() == [v1, v2]

    registry.start_canary(v3, faced=v2, share=0.05, reason="gate passed", evidence={})
    second = registry.canary()
    registry.force_promote(v1, "an operator")  # the champion it faces moves
    with pytest.raises(ChampionMovedError):
        registry.decide_canary(second, "promote", "better", {})
    entry = registry.decide_canary(second, "rollback", "guardrail: error rate", {})
    assert entry["action"] == "canary-rollback"
    assert registry.canary() is None
    assert registry.alias_version(CHAMPION) == v1
    # a rolled-back canary is no good champion: rollback walks promotions only
    assert registry.rollback("v1 again")["champion"] == v2
    actions = [e["action"] for e in registry.ledger.entries()]
    assert actions == ["promote", "canary-start", "canary-hold", "canary-step", "promote",
                       "canary-start", "promote", "canary-rollback", "rollback"]  # fmt: skip


def _in_processes(function: Callable[..., R], calls: list[tuple]) -> list[R]:
    """`function(*arguments)` for each call, each in its own spawned process, all at once."""
    with SPAWN.Pool(len(calls)) as pool:
        jobs = [pool.apply_async(function, arguments) for arguments in calls]
        return [job.get(timeout=300) for job in jobs]


def _judge_in_a_process(
    tracking_uri: str, pipeline: Params, uri: tuple[str, str], start: object
) -> dict:
    """One of several processes racing to promote their challenger (spawned: own client)."""
    assert pipeline.mlflow.tracking_uri == tracking_uri
    # The pipeline's settings hold absolute locations, as a loaded workspace's do.
    workspace = Workspace(pipeline.paths.features / "params.yaml", pipeline)
    registry = workspace.registry  # points this process's MLflow at `tracking_uri`
    version = registry.register(*uri, {})
    start.wait()  # all gather evidence against the same champion, then race for the lock
    return judge_on_recent_window(workspace, version, dry_run=False)[1]


def test_concurrent_promotions_are_linearizable(world: dict, tmp_path: Path) -> None:
    """Three processes promote at once (every challenger passes the rule): in ledger order,
    each one replaced exactly the champion it was compared with."""
    registry_params = _own_model(world, tmp_path, "race", margin=-1.0, slice_max_regression=1.0)
    registry = _registry(registry_params)
    registry.force_promote(registry.register(*world["uris"]["weak"], {}), "setup")
    pipeline = world["pipeline"].model_copy(update={"registry": registry_params})
    start = SPAWN.Manager().Barrier(3)
    entries = _in_processes(
        _judge_in_a_process,
        [
            (world["tracking_uri"], pipeline, world["uris"][n], start)
            for n in ("strong", "weak", "strong")
        ],
    )
    assert all(entry["action"] == "promote" for entry in entries)
    ledger = registry.ledger.entries()[1:]  # after the setup promotion
    assert len(ledger) == 3
    champion = registry.ledger.entries()[0]["version"]
    for entry in ledger:
        assert entry["faced"] == entry["previous_champion"] == champion, ledger
        champion = entry["champion"]
    assert registry.alias_version(CHAMPION) == champion


def _hold_the_lock(tracking_uri: str, name: str, times: int) -> list[tuple[float, float]]:
    mlflow.set_registry_uri(tracking_uri)
    lock = RegistryLock(mlflow.MlflowClient(tracking_uri), name, wait_s=120, lease_s=600)
    held = []
    for _ in range(times):
        with lock.held():
            began = time.time()
            time.sleep(0.05)
            held.append((began, time.time()))
    return held


def test_the_registry_lock_excludes_other_processes(world: dict) -> None:
    held = _in_processes(_hold_the_lock, [(world["tracking_uri"], "mutex", 5)] * 3)
    spans = sorted(span for spans in held for span in spans)
    assert len(spans) == 15
    for (_, end), (begin, _) in itertools.pairwise(spans):
        assert begin >= end  # no two holders at once


def test_a_crashed_holders_lock_expires_and_a_busy_lock_names_its_holder(world: dict) -> None:
    client = mlflow.MlflowClient(world["tracking_uri"])
    crashed = RegistryLock(client, "crash", wait_s=1, lease_s=0.5)
    assert crashed._try_acquire("a holder that never releases")
    waiter = RegistryLock(client, "crash", wait_s=0.2, lease_s=600)
    with (
        pytest.raises(LooplineError, match=r"crash\.lock stayed busy .*held by .*pid"),
        waiter.held(),
    ):
        pass
    time.sleep(0.5)
    with RegistryLock(client, "crash", wait_s=5, lease_s=600).held():
        assert client.get_registered_model("crash.lock").tags[RegistryLock.TOKEN] != (
            "a holder that never releases"
        )


def test_an_alias_moved_outside_loopline_is_reported_rolled_back_and_promoted_past(
    world: dict, tmp_path: Path
) -> None:
    """v1 is the ledger's champion; someone points the alias at v2 in MLflow (no compiled
    scorer). status warns and says what to do; promote of a good v3 is judged against v1;
    rollback returns to the ledger's champion, not "nothing to roll back to"."""
    from loopline.promotion.audit import champion_warnings  # noqa: PLC0415

    params = _own_model(world, tmp_path, "drift", margin=-1.0, slice_max_regression=1.0)
    registry = _registry(params)
    v1 = registry.register(*world["uris"]["weak"], {})
    registry.force_promote(v1, "setup")
    with mlflow.start_run():
        plain = mlflow.pyfunc.log_model(name="model", python_model=NotCompiled())
    v2 = registry.register(plain.model_uri, plain.run_id, {})
    assert champion_warnings(registry) == []
    registry.client.set_registered_model_alias(registry.name, CHAMPION, v2)  # the MLflow UI

    warnings = champion_warnings(registry)
    assert f"points at version {v2}, a version the ledger never promoted" in warnings[0]
    assert f"version {v2} cannot be served" in warnings[1]
    assert "no compiled scorer" in warnings[1]
    assert f"`loopline registry rollback` points it back at version {v1}" in warnings[2]
    assert registry.status()["ledger_champion"] == v1

    assert registry.rollback("alias drifted")["champion"] == v1
    assert registry.alias_version(CHAMPION) == v1
    assert champion_warnings(registry) == []

    registry.client.set_registered_model_alias(registry.name, CHAMPION, v2)  # drifts again
    pipeline = world["pipeline"].model_copy(update={"registry": params})
    workspace = Workspace(pipeline.paths.features / "params.yaml", pipeline)
    v3 = registry.register(*world["uris"]["strong"], {})
    gate, entry = judge_on_recent_window(workspace, v3, dry_run=False)
    assert gate.passed, gate.reasons()
    assert (entry["action"], entry["faced"], entry["judged_against"]) == ("promote", v2, v1)
    assert "no compiled scorer" in entry["unservable_champion"]
    assert gate.champion  # scored against v1's predictions, not judged as a first model
    assert registry.alias_version(CHAMPION) == v3
    assert registry.ledger_champion() == v3
