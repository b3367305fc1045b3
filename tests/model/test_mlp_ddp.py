"""The PyTorch path: DDP with 1 and 2 CPU processes trains the same model; seeds repeat."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from loopline.core.params import Params
from loopline.infra.processes import free_port
from loopline.training.families import family_params
from loopline.training.families.mlp.ddp import lr_lambda
from loopline.training.families.mlp.launch import join_training, train_mlp
from loopline.training.families.mlp.params import MLPParams
from loopline.training.feature_sets import load_feature_sets
from loopline.training.metrics import classification_metrics

pytestmark = pytest.mark.slow


def _train(features: Path, out: Path, params: MLPParams, seed: int):
    return train_mlp(features, out, params, seed, env={"OMP_NUM_THREADS": "1"})


@pytest.fixture(scope="module")
def mlp_params(fast_params: Params) -> MLPParams:
    return family_params(fast_params, "mlp")


@pytest.fixture(scope="module")
def single(
    small_features_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
    mlp_params: MLPParams,
    fast_params: Params,
):
    return _train(small_features_dir, tmp_path_factory.mktemp("ddp1"), mlp_params, fast_params.seed)


def _valid_metrics(estimator, features_dir: Path) -> dict:
    return load_feature_sets(features_dir).scores(estimator, "valid")


def test_two_processes_train_the_same_quality_as_one(
    single,
    small_features_dir: Path,
    tmp_path: Path,
    mlp_params: MLPParams,
    fast_params: Params,
) -> None:
    two = mlp_params.model_copy(update={"nproc_per_node": 2})
    pair, pair_meta = _train(small_features_dir, tmp_path, two, fast_params.seed)
    estimator, meta = single
    assert meta["throughput"]["world_size"] == 1
    assert pair_meta["throughput"]["world_size"] == 2
    one_metrics, two_metrics = (
        _valid_metrics(estimator, small_features_dir),
        _valid_metrics(pair, small_features_dir),
    )
    assert abs(one_metrics["roc_auc"] - two_metrics["roc_auc"]) < 0.02, (one_metrics, two_metrics)
    assert abs(one_metrics["log_loss"] - two_metrics["log_loss"]) < 0.02, (one_metrics, two_metrics)
    # same global batch and schedule: the same number of optimisation steps per epoch
    assert [round(h["learning_rate"], 10) for h in meta["history"]] == [
        round(h["learning_rate"], 10) for h in pair_meta["history"]
    ][: len(meta["history"])]


def test_without_dropout_two_processes_train_the_same_weights_as_one(
    small_features_dir: Path, tmp_path: Path, mlp_params: MLPParams, fast_params: Params
) -> None:
    """The data-parallel arithmetic itself: with no random masks and an even number of
    training rows, each global batch is the same rows in 1 and 2 processes and DDP's
    averaged gradient is the full batch's, so the weights agree up to float rounding.
    (With dropout each process draws its own masks: then only the quality agrees, above.)"""
    features = _even_rows(small_features_dir, tmp_path / "features")
    plain = mlp_params.model_copy(update={"dropout": 0.0, "max_epochs": 3, "patience": 3})
    one, one_meta = _train(features, tmp_path / "one", plain, fast_params.seed)
    two, two_meta = _train(
        features, tmp_path / "two", plain.model_copy(update={"nproc_per_node": 2}),
        fast_params.seed,
    )  # fmt: skip
    assert one_meta["epochs_run"] == two_meta["epochs_run"] == 3
    for name, tensor in one.state.items():
        torch.testing.assert_close(two.state[name], tensor, rtol=0, atol=1e-4, msg=name)


def _even_rows(features_dir: Path, copy: Path) -> Path:
    """A copy of the feature sets with an even number of training rows (whole batches
    split evenly across 2 processes)."""
    shutil.copytree(features_dir, copy)
    train_file = copy / "features" / "train.parquet"
    train = pd.read_parquet(train_file)
    train.iloc[: len(train) // 2 * 2].to_parquet(train_file, index=False)
    return copy


def _wait_for_rendezvous_host(port: int, node: Future, timeout_s: float = 120) -> None:
    """Until the first node to arrive hosts the c10d store on `port` (it listens there)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and not node.done():
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
            return
        time.sleep(0.2)
    raise AssertionError(f"no rendezvous on port {port} (node done: {node.done()})")


def test_two_nodes_train_the_same_model_as_one_process(
    small_features_dir: Path, tmp_path: Path, mlp_params: MLPParams, fast_params: Params
) -> None:
    """Multi-node torchrun as on two machines: two launches, `--nnodes 2 --node_rank 0/1`,
    one c10d rendezvous endpoint, gloo. Same best epoch and metrics as one process.

    Node 1 joins first, so c10d (which ignores `--node_rank`) makes it global rank 0: the
    launching node must get the model all the same.
    """
    features = _even_rows(small_features_dir, tmp_path / "features")
    plain = mlp_params.model_copy(update={"dropout": 0.0, "max_epochs": 4, "patience": 2})
    one, one_meta = _train(features, tmp_path / "one", plain, fast_params.seed)
    port = free_port()
    nodes = plain.model_copy(update={"nnodes": 2, "rdzv_endpoint": f"127.0.0.1:{port}"})
    with ThreadPoolExecutor(1) as other_machine:
        node_1 = other_machine.submit(
            join_training, features, nodes, fast_params.seed, 1, {"OMP_NUM_THREADS": "1"}
        )
        _wait_for_rendezvous_host(port, node_1)  # the other machine is there first
        two, two_meta = _train(features, tmp_path / "two", nodes, fast_params.seed)
        node_1.result(timeout=300)
    assert two_meta["throughput"]["world_size"] == 2
    assert two_meta["saved_by_rank"] == 1  # the hard case: global rank 0 is elsewhere
    assert two_meta["best_epoch"] == one_meta["best_epoch"]
    one_metrics = _valid_metrics(one, features)
    two_metrics = _valid_metrics(two, features)
    for name in ("roc_auc", "pr_auc", "log_loss", "brier"):
        assert abs(one_metrics[name] - two_metrics[name]) < 1e-3, (name, one_metrics, two_metrics)


def test_same_seed_repeats_the_cpu_run_exactly(
    single,
    small_features_dir: Path,
    tmp_path: Path,
    mlp_params: MLPParams,
    fast_params: Params,
) -> None:
    again, _ = _train(small_features_dir, tmp_path, mlp_params, fast_params.seed)
    estimator, _ = single
    for name, tensor in estimator.state.items():
        assert torch.equal(tensor, again.state[name]), name


def test_the_mlp_beats_chance_and_stays_calibrated(single, small_features_dir: Path) -> None:
    """The logit offset undoes the class weighting: predicted and observed rates agree."""
    estimator, meta = single
    data = load_feature_sets(small_features_dir)
    proba = estimator.predict_proba(data.x["valid"])[:, 1]
    metrics = classification_metrics(data.y["valid"], proba, 0.5)
    assert metrics["roc_auc"] > 0.6
    assert abs(proba.mean() - data.y["valid"].mean()) < 0.08
    assert meta["epochs_run"] >= 1


def test_learning_rate_warms_up_then_decays_to_the_floor() -> None:
    factor = lr_lambda(total_steps=100, warmup_fraction=0.1, min_fraction=0.05)
    values = np.array([factor(step) for step in range(100)])
    assert values[0] == pytest.approx(0.1)
    assert values[9] == pytest.approx(1.0)
    assert np.all(np.diff(values[:10]) > 0)
    assert np.all(np.diff(values[10:]) <= 1e-12)
    assert values[-1] == pytest.approx(0.05, abs=1e-3)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_nccl_training_on_gpu_matches_cpu_quality(
    single, small_features_dir: Path, tmp_path: Path, mlp_params: MLPParams, fast_params: Params
) -> None:
    gpus = torch.cuda.device_count()
    on_gpu, meta = _train(
        small_features_dir,
        tmp_path,
        mlp_params.model_copy(update={"nproc_per_node": gpus}),
        fast_params.seed,
    )
    assert meta["throughput"]["device"].startswith("cuda")
    cpu_auc = _valid_metrics(single[0], small_features_dir)["roc_auc"]
    assert abs(_valid_metrics(on_gpu, small_features_dir)["roc_auc"] - cpu_auc) < 0.03
    assert os.environ.get("CUDA_VISIBLE_DEVICES", "") != "-1"
