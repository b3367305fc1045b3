"""The registry against a real MLflow store: the promotion rule end to end, the ledger,
rollback, dry runs, atomic alias moves, and the logged model scoring raw records."""

from __future__ import annotations

import threading
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest

from loopline.config import Params
from loopline.datasets.base import Dataset
from loopline.errors import LooplineError
from loopline.models import logistic, xgb
from loopline.models.base import FeatureSets, load_feature_sets
from loopline.registry import CHALLENGER, CHAMPION, Registry, apply_rule, collect_evidence
from loopline.tracking import configure_mlflow
from loopline.training import train_family
from tests.builders import log_compiled

pytestmark = pytest.mark.slow


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
    registry_params = fast_params.registry.model_copy(
        update={
            "floors": {"roc_auc": 0.52}, "min_pr_auc_lift": 1.0,
            "slice_min_rows": 150, "bootstrap_samples": 60,
            "ledger": root / "ledger.jsonl", "cards": root / "cards",
        }
    )  # fmt: skip
    mlflow_params = fast_params.mlflow.model_copy(
        update={"tracking_uri": f"sqlite:///{root}/mlflow.db", "artifact_root": root / "mlruns"}
    )
    configure_mlflow(mlflow_params)
    data = load_feature_sets(small_features_dir, "late")
    strong = train_family("xgboost", data, fast_params.train, seed=fast_params.seed)
    stunted = {"n_estimators": 3, "max_depth": 2, "early_stopping_rounds": 3}
    weak = xgb.train(data, fast_params.train.xgboost.model_copy(update=stunted), 0)
    shuffled = np.random.default_rng(0).permutation(data.y["train"])
    noise = FeatureSets(data.tables, data.x, {**data.y, "train": shuffled})
    useless = logistic.train(noise, fast_params.train.logistic, 0)
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
    return {"params": registry_params, "uris": uris, "models": logged, "recent": recent}


def _register_and_decide(
    registry: Registry, world: dict, name: str, dataset: Dataset, dry_run: bool = False
) -> tuple:
    uri, run_id = world["uris"][name]
    version = registry.register(uri, run_id, {"loopline.family": name})
    evidence = collect_evidence(
        registry,
        version,
        world["recent"],
        record_columns=dataset.record_columns(),
        target_column="late",
        slice_columns=dataset.slice_columns,
    )
    gate, entry = apply_rule(registry, version, evidence, seed=0, dry_run=dry_run)
    return version, gate, entry


def test_the_promotion_rule_end_to_end(world: dict, dataset: Dataset) -> None:
    """first model / better / worse / dry run / rollback twice / forced promotion."""
    registry = Registry(world["params"])

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
    params = world["params"].model_copy(
        update={"model_name": "walk-back", "ledger": tmp_path / "l.jsonl", "margin": -1.0}
    )
    registry = Registry(params)
    versions = [registry.register(*world["uris"][name], {}) for name in ("weak", "strong", "weak")]
    for version in versions:
        registry.force_promote(version, "setup")
    assert registry.rollback("r1")["champion"] == versions[1]
    assert registry.rollback("r2")["champion"] == versions[0]


def test_readers_always_see_a_champion_while_it_moves(world: dict, tmp_path: Path) -> None:
    """Alias moves are atomic for readers: resolving champion never fails mid-move."""
    params = world["params"].model_copy(
        update={"model_name": "atomic", "ledger": tmp_path / "l.jsonl"}
    )
    registry = Registry(params)
    first = registry.register(*world["uris"]["weak"], {})
    second = registry.register(*world["uris"]["strong"], {})
    registry.force_promote(first, "start")
    seen, errors, stop = set(), [], threading.Event()

    def read() -> None:
        reader = Registry(params)
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
