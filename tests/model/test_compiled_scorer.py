"""The compiled scorer: each family's safe-format copy matches the trained model, a broken
export is refused before anything is written, and damaged files are refused on load."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from loopline.core.params import Params
from loopline.scoring.formats import ScorerError
from loopline.scoring.scorer import MANIFEST_FILE, PARITY_TOLERANCE, CompiledScorer, load_scorer
from loopline.training import compile as compile_module
from loopline.training.compile import compile_scorer
from loopline.training.families import families, family_params
from loopline.training.families.mlp.network import MLPClassifier, MLPShape, TabularMLP
from loopline.training.feature_sets import FeatureSets
from loopline.training.train import train_family

CLASSIC = [name for name, family in families().items() if not family.distributed]


def _random_mlp(data: FeatureSets) -> MLPClassifier:
    """A real TabularMLP with seeded random weights (training it is test_mlp_ddp's job)."""
    shape = MLPShape(
        numeric=tuple(data.numeric), categorical=tuple(data.categorical),
        cardinalities=tuple(data.tables.cardinalities[c] for c in data.categorical),
        embedding_max_dim=8, hidden=(32, 16), dropout=0.3,
    )  # fmt: skip
    torch.manual_seed(0)
    network = TabularMLP(shape)
    for parameter in network.parameters():  # move LayerNorm off its identity start
        parameter.data += 0.1 * torch.randn_like(parameter)
    return MLPClassifier(shape, network.state_dict(), logit_offset=-0.3)


@pytest.fixture(scope="module")
def estimators(data: FeatureSets, fast_params: Params) -> dict[str, tuple[object, float]]:
    trained = {
        family: train_family(
            family, data, family_params(fast_params, family), seed=fast_params.seed
        )
        for family in CLASSIC
    }
    found = {family: (t.estimator, t.threshold) for family, t in trained.items()}
    return found | {"mlp": (_random_mlp(data), 0.4)}


@pytest.fixture(scope="module")
def compiled(
    estimators: dict, data: FeatureSets, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, CompiledScorer]:
    folder = tmp_path_factory.mktemp("compiled")
    return {
        family: compile_scorer(
            folder / family,
            family=family,
            tables=data.tables,
            estimator=estimator,
            threshold=threshold,
            check_features=data.x["valid"],
        )
        for family, (estimator, threshold) in estimators.items()
    }


@pytest.mark.parametrize("family", [*CLASSIC, "mlp"])
def test_compiled_scores_match_the_trained_model_on_the_test_slice(
    family: str, estimators: dict, compiled: dict, data: FeatureSets, test_records: pd.DataFrame
) -> None:
    """Parity: raw test records through the compiled scorer (loaded back from its files)
    give the trained estimator's probabilities within 1e-5, and the same labels except at
    exact threshold ties."""
    estimator, threshold = estimators[family]
    expected = estimator.predict_proba(data.tables.transform(test_records))[:, 1]
    scored = compiled[family].score_frame(test_records)
    np.testing.assert_allclose(scored["probability"], expected, rtol=0, atol=PARITY_TOLERANCE)
    ties = np.abs(expected - threshold) <= PARITY_TOLERANCE
    assert ((expected >= threshold) == scored["label"])[~ties].all()
    records = test_records.head(20).to_dict(orient="records")
    singles = [compiled[family].score_records([record])[0] for record in records]
    np.testing.assert_allclose(singles, expected[:20], rtol=0, atol=PARITY_TOLERANCE)
    assert compiled[family].manifest["estimator"]["kind"] in {
        "xgboost",
        "treelite",
        "linear",
        "mlp",
    }


def test_an_export_that_disagrees_with_training_is_refused_and_writes_nothing(
    estimators: dict, data: FeatureSets, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug in an exporter (here: a shifted intercept) must never reach the registry."""
    real_export = compile_module.export_estimator

    def shifted(family: str, estimator: object, tables: object, out: Path) -> dict:
        entry = real_export(family, estimator, tables, out)
        from safetensors.numpy import load_file, save_file  # noqa: PLC0415

        arrays = load_file(out / entry["file"])
        arrays["intercept"] = arrays["intercept"] + 0.05
        save_file(arrays, out / entry["file"])
        return entry

    monkeypatch.setattr(compile_module, "export_estimator", shifted)
    estimator, threshold = estimators["logistic"]
    with pytest.raises(ScorerError, match="differs from the trained model by up to"):
        compile_scorer(
            tmp_path / "scorer", family="logistic", tables=data.tables, estimator=estimator,
            threshold=threshold, check_features=data.x["valid"],
        )  # fmt: skip
    assert not (tmp_path / "scorer").exists()


@pytest.fixture
def scorer_dir(estimators: dict, data: FeatureSets, tmp_path: Path) -> Path:
    estimator, threshold = estimators["hist_gb"]
    compile_scorer(
        tmp_path / "scorer", family="hist_gb", tables=data.tables, estimator=estimator,
        threshold=threshold, check_features=data.x["valid"].head(200),
    )  # fmt: skip
    return tmp_path / "scorer"


def test_a_damaged_model_file_is_refused_by_name(scorer_dir: Path) -> None:
    model = scorer_dir / "model.tl"
    model.write_bytes(model.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(ScorerError, match=r"model\.tl is missing or does not match its checksum"):
        load_scorer(scorer_dir)


def test_a_tree_scorer_loads_and_scores_where_openmp_has_one_thread(
    scorer_dir: Path, test_records: pd.DataFrame, tmp_path: Path
) -> None:
    """Under OMP_NUM_THREADS=1 (the service's workers, the serving bench) the default
    thread count follows it: Treelite refuses more threads than OpenMP was given."""
    records = tmp_path / "records.parquet"
    test_records.head(50).to_parquet(records)
    script = (
        "import sys, pandas as pd; from pathlib import Path; "
        "from loopline.scoring.scorer import load_scorer; "
        "scored = load_scorer(Path(sys.argv[1])).score_frame(pd.read_parquet(sys.argv[2])); "
        "print(len(scored))"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-c", script, str(scorer_dir), str(records)],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split()[-1] == "50"


def test_a_folder_without_a_manifest_is_refused(scorer_dir: Path) -> None:
    (scorer_dir / MANIFEST_FILE).unlink()
    with pytest.raises(ScorerError, match="holds no compiled scorer"):
        load_scorer(scorer_dir)


def test_an_unknown_scorer_format_is_refused(scorer_dir: Path) -> None:
    manifest = json.loads((scorer_dir / MANIFEST_FILE).read_text())
    (scorer_dir / MANIFEST_FILE).write_text(json.dumps(manifest | {"format": 7}))
    with pytest.raises(ScorerError, match="scorer format 7"):
        load_scorer(scorer_dir)
