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
import copy
import logging
import math
import os
import time
from contextlib import nullcontext
from pathlib import Path

import torch
import torch.distributed as dist
from safetensors.torch import save_file
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from loopline.core.io import atomic_path, write_json
from loopline.core.seeds import seed_everything
from loopline.training.families.mlp import MLPParams
from loopline.training.families.mlp.network import (
    CHECKPOINT_FILE,
    WEIGHTS_FILE,
    MLPShape,
    TabularMLP,
    shape_as_dict,
    to_tensors,
)
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


def main() -> None:  # noqa: PLR0915 - one readable loop, kept in one place on purpose
    """Train, early-stop, and (first process of each node) save the best weights and history."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--features", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--params", required=True, help="MLPParams as JSON")
    parser.add_argument("--seed", type=int, required=True)
    args = parser.parse_args()
    params = MLPParams.model_validate_json(args.params)

    # -- processes and devices ---------------------------------------------------------------
    use_cuda = torch.cuda.is_available()
    dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device(f"cuda:{local_rank}" if use_cuda else "cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    else:
        torch.use_deterministic_algorithms(True)
    node_leader = local_rank == 0  # one per node: logs, tracks, saves
    logging.basicConfig(
        level=logging.INFO if node_leader else logging.WARNING, format="%(message)s"
    )
    seed_everything(args.seed)  # identical initial weights on every rank

    # -- data: tensors made once, on the device ----------------------------------------------
    data = load_feature_sets(args.features)
    cardinalities = data.tables.cardinalities
    shape = MLPShape(
        numeric=tuple(data.numeric),
        categorical=tuple(data.categorical),
        cardinalities=tuple(cardinalities[c] for c in data.categorical),
        embedding_max_dim=params.embedding_max_dim,
        hidden=tuple(params.hidden),
        dropout=params.dropout,
    )
    tensors = {}
    for split in ("train", "valid"):
        numeric, codes = to_tensors(data.x[split], shape)
        labels = torch.from_numpy(data.y[split]).float()
        tensors[split] = tuple(t.to(device) for t in (numeric, codes, labels))
    x_num, x_cat, y = tensors["train"]
    v_num, v_cat, v_y = tensors["valid"]
    positives = float(y.sum())
    pos_weight = (len(y) - positives) / positives
    logit_offset = -math.log(pos_weight)

    # -- model, optimiser, schedule ------------------------------------------------------------
    model = TabularMLP(shape).to(device)
    ddp = DistributedDataParallel(model, device_ids=[local_rank] if use_cuda else None)
    optimizer = torch.optim.AdamW(
        parameter_groups(model, params.weight_decay), lr=params.learning_rate
    )
    rows_per_rank = len(y) // world  # every rank takes the same number of rows and steps
    per_rank_batch = max(1, params.batch_size // world)
    steps_per_epoch = math.ceil(rows_per_rank / per_rank_batch)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lr_lambda(
            steps_per_epoch * params.max_epochs, params.warmup_fraction, params.min_lr_fraction
        ),
    )
    train_loss = nn.BCEWithLogitsLoss(pos_weight=torch.tensor(pos_weight, device=device))
    plain_loss = nn.BCEWithLogitsLoss(reduction="sum")
    autocast_dtype = amp_dtype(params.amp, device)
    scaler = torch.amp.GradScaler("cuda", enabled=autocast_dtype is torch.float16)

    def autocast():  # noqa: ANN202
        if autocast_dtype is None:
            return nullcontext()
        return torch.autocast(device_type=device.type, dtype=autocast_dtype)

    def sync() -> None:
        if use_cuda:
            torch.cuda.synchronize(device)

    tracker = None
    if node_leader and os.environ.get("MLFLOW_RUN_ID"):
        import mlflow  # noqa: PLC0415 - the tracking node's leader only

        tracker = mlflow
    best = {"loss": math.inf, "epoch": -1, "state": None}
    history: list[dict] = []
    timing = {"data_s": 0.0, "compute_s": 0.0, "rows": 0}
    generator = torch.Generator().manual_seed(args.seed)

    # -- the loop ------------------------------------------------------------------------------
    for epoch in range(params.max_epochs):
        ddp.train()
        order = torch.randperm(len(y), generator=generator).to(device)
        shard = order[rank : rows_per_rank * world : world]
        loss_sum, seen = 0.0, 0
        for start in range(0, rows_per_rank, per_rank_batch):
            sync()
            began = time.perf_counter()
            index = shard[start : start + per_rank_batch]
            batch = (x_num[index], x_cat[index], y[index])
            sync()
            sliced = time.perf_counter()
            with autocast():
                loss = train_loss(ddp(batch[0], batch[1]).float(), batch[2])
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(ddp.parameters(), params.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            schedule.step()
            loss_sum += float(loss.detach()) * len(index)
            seen += len(index)
            sync()
            timing["data_s"] += sliced - began
            timing["compute_s"] += time.perf_counter() - sliced
        timing["rows"] += seen

        # validation: each rank scores its share of rows, losses are summed over ranks
        ddp.eval()
        with torch.inference_mode(), autocast():
            mine = slice(rank, None, world)
            logits = model(v_num[mine], v_cat[mine]).float() + logit_offset
            valid_sum = float(plain_loss(logits, v_y[mine]))
        train_sum, train_rows, valid_total, valid_rows = sum_across_ranks(
            loss_sum, seen, valid_sum, len(v_y[mine]), device=device
        )
        record = {
            "epoch": epoch,
            "train_loss": train_sum / train_rows,
            "valid_log_loss": valid_total / valid_rows,
            "learning_rate": schedule.get_last_lr()[0],
        }
        history.append(record)
        if record["valid_log_loss"] < best["loss"] - 1e-5:
            best = {
                "loss": record["valid_log_loss"],
                "epoch": epoch,
                "state": copy.deepcopy(model.state_dict()),
            }
        if node_leader:
            log.info(
                "epoch %(epoch)d train %(train_loss).4f valid %(valid_log_loss).4f "
                "lr %(learning_rate).2e",
                record,
            )
            if tracker is not None:
                tracker.log_metrics({k: v for k, v in record.items() if k != "epoch"}, step=epoch)
        if epoch - best["epoch"] >= params.patience:
            break

    # -- each node's leader saves -------------------------------------------------------------
    if node_leader:
        total_s = timing["data_s"] + timing["compute_s"]
        state = {k: v.detach().cpu().contiguous() for k, v in best["state"].items()}
        with atomic_path(args.out / WEIGHTS_FILE) as tmp:
            save_file(state, tmp)
        checkpoint = {
            "shape": shape_as_dict(shape),
            "logit_offset": logit_offset,
            "best_epoch": best["epoch"],
            "epochs_run": len(history),
            "saved_by_rank": rank,  # this node's leader: global rank 0 only if it came first
            "history": history,
            "throughput": {
                "world_size": world,
                "device": str(device),
                "amp": str(autocast_dtype) if autocast_dtype else "off",
                "train_rows_per_s": timing["rows"] * world / total_s,
                "data_fraction": timing["data_s"] / total_s,
                "compute_fraction": timing["compute_s"] / total_s,
                "train_seconds": total_s,
            },
        }
        write_json(checkpoint, args.out / CHECKPOINT_FILE)
        log.info(
            "best epoch %d of %d, valid log loss %.4f", best["epoch"], len(history), best["loss"]
        )
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
