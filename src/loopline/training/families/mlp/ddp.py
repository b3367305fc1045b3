"""Distributed training of the tabular MLP: the script `torchrun` launches on every process.

    torchrun --standalone --nproc_per_node=2 -m loopline.training.families.mlp.ddp \
        --features artifacts/featurize --out artifacts/models/mlp/ddp --params '{...}' --seed 2013

Read top to bottom, it is the whole training loop:
  * every process loads the feature sets once as tensors (on its GPU if it has one); batches
    are index slices of those tensors, so no per-row Python runs on the hot path;
  * each epoch draws one permutation (same seed on every rank) and gives rank r the rows
    r, r+W, r+2W, ... (what DistributedSampler does); `batch_size` is global, split across
    ranks, so 1 and N processes take the same optimisation steps;
  * AdamW, linear warm-up then cosine decay, gradient clipping, bf16/fp16 autocast on GPU,
    positive class up-weighted by the negative/positive ratio;
  * validation loss is summed across ranks (all-reduce) every epoch and drives early
    stopping, so every rank stops at the same epoch;
  * every rank holds the same weights, so the first process of each node (LOCAL_RANK 0)
    logs and saves into that node's `--out`: with a c10d rendezvous the global ranks are
    handed out in order of arrival, not by `--node_rank`, so global rank 0 may well sit on
    a node that joined, and the node that launched the train stage must still get the model.

Up-weighting positives shifts every logit by log(pos_weight); the saved model subtracts it
again (`logit_offset`), so its probabilities stay calibrated.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from safetensors.torch import save_file
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from loopline.core.io import atomic_path, write_json
from loopline.core.seeds import seed_everything
from loopline.training.families.mlp.network import (
    CHECKPOINT_FILE,
    WEIGHTS_FILE,
    MLPShape,
    TabularMLP,
    shape_as_dict,
    to_tensors,
)
from loopline.training.families.mlp.params import MLPParams
from loopline.training.feature_sets import load_feature_sets

log = logging.getLogger("loopline.mlp_train")


def lr_lambda(total_steps: int, warmup_fraction: float, min_fraction: float):  # noqa: ANN201
    """Multiplier of the base learning rate: linear warm-up, then cosine down to a floor."""
    warmup = max(1, int(total_steps * warmup_fraction))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        return min_fraction + (1 - min_fraction) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def amp_dtype(setting: str, device: torch.device) -> torch.dtype | None:
    """Autocast dtype: bf16 where the GPU supports it (auto), fp16 if asked, none on CPU."""
    if device.type != "cuda" or setting == "off":
        return None
    if setting == "fp16":
        return torch.float16
    if setting == "bf16" or torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float16


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on weight matrices and embeddings; none on biases and norm gains."""
    decay, no_decay = [], []
    for name, parameter in model.named_parameters():
        (no_decay if parameter.ndim < 2 or "norm" in name.lower() else decay).append(parameter)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def sum_across_ranks(*values: float, device: torch.device) -> list[float]:
    """All-reduce (sum) a few scalars over every process."""
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor.tolist()


@dataclass(frozen=True)
class Ranks:
    """This process's place: its global rank, how many there are, its device."""

    rank: int
    world: int
    local_rank: int
    device: torch.device

    @property
    def node_leader(self) -> bool:
        """The first process of its node: it logs, tracks and saves."""
        return self.local_rank == 0

    def sync(self) -> None:
        """Wait for the GPU's queued work (timings measure work done, not work queued)."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


def start_processes() -> Ranks:
    """Join the process group: NCCL on GPUs, gloo (deterministic) on CPU."""
    use_cuda = torch.cuda.is_available()
    dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    ranks = Ranks(
        dist.get_rank(), dist.get_world_size(), local_rank,
        torch.device(f"cuda:{local_rank}" if use_cuda else "cpu"),
    )  # fmt: skip
    if use_cuda:
        torch.cuda.set_device(ranks.device)
    else:
        torch.use_deterministic_algorithms(True)
    level = logging.INFO if ranks.node_leader else logging.WARNING
    logging.basicConfig(level=level, format="%(message)s")
    return ranks


@dataclass(frozen=True)
class DeviceData:
    """The train and valid splits as tensors on the device, and the network's shape."""

    shape: MLPShape
    train: tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # numeric, codes, labels
    valid: tuple[torch.Tensor, torch.Tensor, torch.Tensor]

    @classmethod
    def load(cls, features: Path, params: MLPParams, device: torch.device) -> DeviceData:
        """Read the feature sets once and move them to `device`."""
        data = load_feature_sets(features)
        cardinalities = data.tables.cardinalities
        shape = MLPShape(
            numeric=tuple(data.numeric), categorical=tuple(data.categorical),
            cardinalities=tuple(cardinalities[c] for c in data.categorical),
            embedding_max_dim=params.embedding_max_dim, hidden=tuple(params.hidden),
            dropout=params.dropout,
        )  # fmt: skip
        tensors = {}
        for split in ("train", "valid"):
            numeric, codes = to_tensors(data.x[split], shape)
            labels = torch.from_numpy(data.y[split]).float()
            tensors[split] = tuple(t.to(device) for t in (numeric, codes, labels))
        return cls(shape, tensors["train"], tensors["valid"])


class Precision:
    """Mixed precision on GPU (bf16, or fp16 with a gradient scaler); full precision on CPU."""

    def __init__(self, setting: str, device: torch.device) -> None:
        self.dtype = amp_dtype(setting, device)
        self.device = device
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.dtype is torch.float16)

    def autocast(self) -> contextlib.AbstractContextManager:
        """The forward pass's autocast context (none in full precision)."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)


def epoch_shard(rows: int, ranks: Ranks, generator: torch.Generator) -> torch.Tensor:
    """This rank's rows for one epoch: one seeded permutation, every `world`-th row of it."""
    order = torch.randperm(rows, generator=generator).to(ranks.device)
    rows_per_rank = rows // ranks.world  # every rank takes the same number of rows and steps
    return order[ranks.rank : rows_per_rank * ranks.world : ranks.world]


def train_epoch(
    ddp: nn.Module,
    data: DeviceData,
    shard: torch.Tensor,
    *,
    step: Callable[..., torch.Tensor],
    per_rank_batch: int,
    ranks: Ranks,
    timing: dict[str, float],
) -> tuple[float, int]:
    """One pass over this rank's shard; (summed training loss, rows seen)."""
    ddp.train()
    x_num, x_cat, y = data.train
    loss_sum, seen = 0.0, 0
    for start in range(0, len(shard), per_rank_batch):
        ranks.sync()
        began = time.perf_counter()
        index = shard[start : start + per_rank_batch]
        batch = (x_num[index], x_cat[index], y[index])
        ranks.sync()
        sliced = time.perf_counter()
        loss = step(*batch)
        loss_sum += float(loss.detach()) * len(index)
        seen += len(index)
        ranks.sync()
        timing["data_s"] += sliced - began
        timing["compute_s"] += time.perf_counter() - sliced
    timing["rows"] += seen
    return loss_sum, seen


def valid_loss_sum(
    ddp: DistributedDataParallel, data: DeviceData, precision: Precision, offset: float,
    ranks: Ranks,
) -> tuple[float, int]:  # fmt: skip
    """This rank's share of the validation rows: (summed log loss, rows), calibrated logits."""
    ddp.eval()
    v_num, v_cat, v_y = data.valid
    plain_loss = nn.BCEWithLogitsLoss(reduction="sum")
    with torch.inference_mode(), precision.autocast():
        mine = slice(ranks.rank, None, ranks.world)
        logits = ddp.module(v_num[mine], v_cat[mine]).float() + offset
        return float(plain_loss(logits, v_y[mine])), len(v_y[mine])


def save(out: Path, best: dict, checkpoint: dict) -> None:
    """The best weights (safetensors) and the checkpoint record, each written atomically."""
    state = {k: v.detach().cpu().contiguous() for k, v in best["state"].items()}
    with atomic_path(out / WEIGHTS_FILE) as tmp:
        save_file(state, tmp)
    write_json(checkpoint, out / CHECKPOINT_FILE)


def throughput(timing: dict[str, float], ranks: Ranks, precision: Precision) -> dict:
    """Rows per second over all ranks, and the share spent slicing batches vs computing."""
    total_s = timing["data_s"] + timing["compute_s"]
    return {
        "world_size": ranks.world, "device": str(ranks.device),
        "amp": str(precision.dtype) if precision.dtype else "off",
        "train_rows_per_s": timing["rows"] * ranks.world / total_s,
        "data_fraction": timing["data_s"] / total_s,
        "compute_fraction": timing["compute_s"] / total_s, "train_seconds": total_s,
    }  # fmt: skip


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--features", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--params", required=True, help="MLPParams as JSON")
    parser.add_argument("--seed", type=int, required=True)
    return parser.parse_args()


@dataclass(frozen=True)
class Optimisation:
    """How the weights move: one `step` per batch, the schedule it advances, the precision."""

    step: Callable[..., torch.Tensor]
    schedule: torch.optim.lr_scheduler.LambdaLR
    precision: Precision
    per_rank_batch: int


def optimisation(
    ddp: DistributedDataParallel, params: MLPParams, ranks: Ranks, pos_weight: float, rows: int
) -> Optimisation:
    """AdamW with warm-up + cosine, positives up-weighted, gradients clipped, mixed precision."""
    optimizer = torch.optim.AdamW(
        parameter_groups(ddp.module, params.weight_decay), lr=params.learning_rate
    )
    per_rank_batch = max(1, params.batch_size // ranks.world)
    steps_per_epoch = math.ceil(rows // ranks.world / per_rank_batch)
    total_steps = steps_per_epoch * params.max_epochs
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lr_lambda(total_steps, params.warmup_fraction, params.min_lr_fraction)
    )
    train_loss = nn.BCEWithLogitsLoss(pos_weight=torch.tensor(pos_weight, device=ranks.device))
    precision = Precision(params.amp, ranks.device)

    def step(x_num: torch.Tensor, x_cat: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """One optimiser step on a batch: forward, scaled backward, clip, step, schedule."""
        with precision.autocast():
            loss = train_loss(ddp(x_num, x_cat).float(), labels)
        optimizer.zero_grad(set_to_none=True)
        precision.scaler.scale(loss).backward()
        precision.scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(ddp.parameters(), params.grad_clip)
        precision.scaler.step(optimizer)
        precision.scaler.update()
        schedule.step()
        return loss

    return Optimisation(step, schedule, precision, per_rank_batch)


def main() -> None:
    """Train, early-stop, and (first process of each node) save the best weights and history."""
    args = _arguments()
    params = MLPParams.model_validate_json(args.params)
    ranks = start_processes()
    seed_everything(args.seed)  # identical initial weights on every rank
    data = DeviceData.load(args.features, params, ranks.device)
    rows = len(data.train[2])
    positives = float(data.train[2].sum())
    pos_weight = (rows - positives) / positives
    logit_offset = -math.log(pos_weight)  # the saved model undoes the up-weighting
    model = TabularMLP(data.shape).to(ranks.device)
    on_gpu = ranks.device.type == "cuda"
    ddp = DistributedDataParallel(model, device_ids=[ranks.local_rank] if on_gpu else None)
    opt = optimisation(ddp, params, ranks, pos_weight, rows)

    tracker = _tracker(ranks)
    best: dict = {"loss": math.inf, "epoch": -1, "state": None}
    history: list[dict] = []
    timing = {"data_s": 0.0, "compute_s": 0.0, "rows": 0}
    generator = torch.Generator().manual_seed(args.seed)
    for epoch in range(params.max_epochs):
        shard = epoch_shard(rows, ranks, generator)
        loss_sum, seen = train_epoch(
            ddp, data, shard, step=opt.step, per_rank_batch=opt.per_rank_batch, ranks=ranks,
            timing=timing,
        )  # fmt: skip
        valid_sum, valid_rows = valid_loss_sum(ddp, data, opt.precision, logit_offset, ranks)
        train_sum, train_rows, valid_total, valid_all = sum_across_ranks(
            loss_sum, seen, valid_sum, valid_rows, device=ranks.device
        )
        record = {
            "epoch": epoch, "train_loss": train_sum / train_rows,
            "valid_log_loss": valid_total / valid_all,
            "learning_rate": opt.schedule.get_last_lr()[0],
        }  # fmt: skip
        history.append(record)
        if record["valid_log_loss"] < best["loss"] - 1e-5:
            best = {"loss": record["valid_log_loss"], "epoch": epoch,
                    "state": copy.deepcopy(model.state_dict())}  # fmt: skip
        _report(record, ranks, tracker)
        if epoch - best["epoch"] >= params.patience:
            break

    if ranks.node_leader:  # every rank holds the same weights: each node's leader saves
        save(args.out, best, {
            "shape": shape_as_dict(data.shape), "logit_offset": logit_offset,
            "best_epoch": best["epoch"], "epochs_run": len(history),
            "saved_by_rank": ranks.rank,  # this node's leader: rank 0 only if it came first
            "history": history, "throughput": throughput(timing, ranks, opt.precision),
        })  # fmt: skip
        log.info("best epoch %d of %d, valid log loss %.4f", best["epoch"], len(history),
                 best["loss"])  # fmt: skip
    dist.barrier()
    dist.destroy_process_group()


def _tracker(ranks: Ranks) -> Any:
    """MLflow, for the node leader of a tracked run (MLFLOW_RUN_ID set); else None."""
    if ranks.node_leader and os.environ.get("MLFLOW_RUN_ID"):
        import mlflow  # noqa: PLC0415 - the tracking node's leader only

        return mlflow
    return None


def _report(record: dict, ranks: Ranks, tracker: Any) -> None:
    """One line per epoch, and the epoch's metrics to MLflow (node leaders only)."""
    if not ranks.node_leader:
        return
    log.info(
        "epoch %(epoch)d train %(train_loss).4f valid %(valid_log_loss).4f lr %(learning_rate).2e",
        record,
    )
    if tracker is not None:
        tracker.log_metrics({k: v for k, v in record.items() if k != "epoch"}, step=record["epoch"])


if __name__ == "__main__":
    main()
