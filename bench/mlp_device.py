"""Benchmark: the MLP's training on GPU (NCCL, bf16 autocast) vs CPU (gloo), in one run.

The MLP is trained exactly as the train stage does it (torchrun over
`loopline.training.families.mlp.ddp`, params.yaml's settings, the same seed) on the featurize
outputs of `make run`, three times on one machine: on every visible GPU with NCCL, the
same again (how far GPU runs repeat), and on CPU with `--cpu-procs` gloo processes. Each
run reports its wall time, the training loop's own throughput, the epochs, and the
validation and test ROC-AUC, PR-AUC and log loss of the saved model.
Run from the project root on a machine with a GPU, after `make run`:
    python bench/mlp_device.py --out /tmp/mlp-device
It needs torch, the library and its light dependencies (no MLflow or Prefect).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

from loopline.training.families import family_params
from loopline.training.families.mlp.launch import train_mlp
from loopline.training.families.mlp.params import MLPParams
from loopline.training.feature_sets import FeatureSets, load_feature_sets
from loopline.workspace import Workspace

ROOT = Path(__file__).resolve().parents[1]
METRICS = ("roc_auc", "pr_auc", "log_loss")


def run(
    label: str,
    nproc: int,
    env: dict[str, str],
    *,
    out: Path,
    data: FeatureSets,
    workspace: Workspace,
    mlp: MLPParams,
) -> dict:
    """Train once under torchrun and score the saved model on validation and test."""
    settings = mlp.model_copy(update={"nproc_per_node": nproc})
    features, seed = workspace.layout.folder, workspace.params.seed
    started = time.perf_counter()
    estimator, meta = train_mlp(features, out / label, settings, seed, env)
    wall = time.perf_counter() - started
    scores = {
        split: {name: round(data.scores(estimator, split)[name], 4) for name in METRICS}
        for split in ("valid", "test")
    }
    return {
        "run": label,
        "wall_s": round(wall, 1),
        "best_epoch": meta["best_epoch"],
        "epochs_run": meta["epochs_run"],
        "valid_loss_history": [round(h["valid_log_loss"], 5) for h in meta["history"]],
        **{k: round(v, 3) if isinstance(v, float) else v for k, v in meta["throughput"].items()},
        **scores,
    }


def main() -> None:
    """Print (and write to --out) a JSON list: one entry per training run."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--cpu-procs", type=int, default=1)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("no CUDA device visible: this benchmark compares GPU with CPU")
    os.chdir(ROOT)
    workspace = Workspace.load(ROOT / "params.yaml")
    mlp = family_params(workspace.params, "mlp")
    data = load_feature_sets(workspace.layout.folder)
    gpus = torch.cuda.device_count()
    cpu_env = {
        "CUDA_VISIBLE_DEVICES": "",
        "OMP_NUM_THREADS": str(max(1, os.cpu_count() // args.cpu_procs)),
    }
    shared = {"out": args.out, "data": data, "workspace": workspace, "mlp": mlp}
    runs = [
        run("gpu", gpus, {}, **shared),
        run("gpu-again", gpus, {}, **shared),
        run("cpu", args.cpu_procs, cpu_env, **shared),
    ]
    report = {"device": torch.cuda.get_device_name(0), "gpus": gpus, "cpus": os.cpu_count(),
              "torch": torch.__version__, "runs": runs}  # fmt: skip
    text = json.dumps(report, indent=1)
    (args.out / "mlp_device.json").write_text(text)
    print(text, file=sys.stdout)


if __name__ == "__main__":
    main()
