"""Launching the MLP's distributed training: torchrun over `loopline.training.families.mlp.ddp`.

One process per GPU (NCCL) or N gloo processes on CPU; only rank 0 writes a checkpoint
(weights as safetensors, the rest as JSON: nothing is unpickled), which is read back here
as an `MLPClassifier`. Kept apart from the family module so that launching needs only
torch and the library, not every model family's packages.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path

from safetensors.torch import load_file

from loopline.core.errors import LooplineError
from loopline.core.io import read_json
from loopline.training.families.mlp.network import (
    CHECKPOINT_FILE,
    WEIGHTS_FILE,
    MLPClassifier,
    shape_from_dict,
)
from loopline.training.families.mlp.params import MLPParams

log = logging.getLogger(__name__)


def torchrun_command(
    features_dir: Path, out_dir: Path, params: MLPParams, seed: int, node_rank: int = 0
) -> list[str]:
    """The torchrun invocation for `params` on one node.

    One node: a standalone rendezvous. Several (`params.nnodes`): every node runs this
    with its own `node_rank` and the same c10d rendezvous endpoint (node 0's address);
    each node's first process writes the checkpoint into that node's `out_dir`.
    """
    launcher = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        f"--nproc_per_node={params.nproc_per_node}",
    ]
    if params.nnodes == 1:
        launcher.append("--standalone")  # picks a free local port: no clash between runs
    else:
        launcher += [
            f"--nnodes={params.nnodes}",
            f"--node_rank={node_rank}",
            "--rdzv_backend=c10d",
            f"--rdzv_endpoint={params.rdzv_endpoint}",
        ]
    script = [
        "-m",
        "loopline.training.families.mlp.ddp",
        "--features",
        str(features_dir),
        "--out",
        str(out_dir),
    ]
    return [*launcher, *script, "--params", params.model_dump_json(), "--seed", str(seed)]


def train_mlp(
    features_dir: Path, out_dir: Path, params: MLPParams, seed: int, env: Mapping[str, str]
) -> tuple[MLPClassifier, dict]:
    """Run DDP training under torchrun; return the estimator and its checkpoint's metadata.

    This is node 0; with `params.nnodes` > 1 the other nodes join with `join_training`.
    """
    command = torchrun_command(features_dir, out_dir, params, seed)
    log.info("launching: %s", " ".join(command[:8]) + " ...")
    result = subprocess.run(command, env={**os.environ, **env}, check=False)
    checkpoint_path = out_dir / CHECKPOINT_FILE
    if result.returncode != 0 or not checkpoint_path.is_file():
        raise LooplineError(f"torchrun exited with {result.returncode}; see the log above")
    checkpoint = read_json(checkpoint_path)
    shape = shape_from_dict(checkpoint["shape"])
    state = load_file(out_dir / WEIGHTS_FILE)
    estimator = MLPClassifier(shape, state, logit_offset=checkpoint["logit_offset"])
    kept = ("best_epoch", "epochs_run", "history", "throughput", "saved_by_rank")
    meta = {k: checkpoint[k] for k in kept}
    return estimator, meta


def join_training(
    features_dir: Path, params: MLPParams, seed: int, node_rank: int, env: Mapping[str, str]
) -> None:
    """Run node `node_rank` (1..nnodes-1) of a multi-node training until it ends.

    Its processes train with node 0's (data-parallel shards of the same batches). Every
    node saves the same model; this one saves into a scratch folder that it then drops, since
    the train stage on node 0 keeps the copy that counts.
    """
    if not 0 < node_rank < params.nnodes:
        raise LooplineError(
            f"node_rank {node_rank}: expected 1..{params.nnodes - 1} "
            f"(mlp.nnodes is {params.nnodes}; node 0 runs the train stage)"
        )
    with tempfile.TemporaryDirectory(prefix="ddp-node-") as scratch:
        command = torchrun_command(features_dir, Path(scratch), params, seed, node_rank)
        result = subprocess.run(command, env={**os.environ, **env}, check=False)
    if result.returncode != 0:
        raise LooplineError(f"torchrun (node {node_rank}) exited with {result.returncode}")
