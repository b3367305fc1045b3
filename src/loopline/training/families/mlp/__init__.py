"""A PyTorch tabular network: categorical embeddings + MLP, trained with DDP under torchrun.

`network` is the model, `ddp` the training script every torchrun process runs, `launch`
starts it (one node, or several). Exported as its weights (safetensors) and scored by a
NumPy forward pass: serving needs no PyTorch.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from loopline.core.errors import LooplineError
from loopline.core.params import Section
from loopline.scoring.features import FeatureTables
from loopline.scoring.formats import write_mlp
from loopline.training.families import Family, Fitted, TrainContext
from loopline.training.feature_sets import FeatureSets


class MLPParams(Section):
    """`train.mlp`: the network, its optimiser and schedule, and the DDP launch."""

    embedding_max_dim: int = Field(ge=1)
    hidden: tuple[int, ...]
    dropout: float = Field(ge=0, lt=1)
    batch_size: int = Field(ge=8)  # global: split across all processes
    learning_rate: float = Field(gt=0)
    weight_decay: float = Field(ge=0)
    warmup_fraction: float = Field(ge=0, lt=1)
    min_lr_fraction: float = Field(ge=0, le=1)
    max_epochs: int = Field(ge=1)
    patience: int = Field(ge=1)
    grad_clip: float = Field(gt=0)
    amp: Literal["auto", "bf16", "fp16", "off"]
    nproc_per_node: int = Field(ge=1)
    nnodes: int = Field(ge=1)
    rdzv_endpoint: str


def train(data: FeatureSets, params: MLPParams, context: TrainContext) -> Fitted:
    """Train under torchrun on the featurize stage's files; the best epoch's weights.

    Checkpoints go to a scratch folder (they are not outputs); epochs are reported to the
    MLflow run that `context.env` names.
    """
    from loopline.training.families.mlp.launch import train_mlp  # noqa: PLC0415 - torch

    if context.features is None:
        raise LooplineError("the mlp family trains from the featurize stage's files: none given")
    with tempfile.TemporaryDirectory(prefix="ddp-") as scratch:
        estimator, report = train_mlp(
            context.features.folder, Path(scratch), params, context.seed, context.env
        )
    return Fitted(estimator, report)


def export(estimator: Any, tables: FeatureTables, out: Path) -> dict[str, Any]:
    """The state dict's arrays and the network's shape."""
    state = {k: v.detach().cpu().numpy() for k, v in estimator.state.items()}
    return write_mlp(
        state, numeric=len(estimator.shape.numeric), hidden_layers=len(estimator.shape.hidden),
        logit_offset=estimator.logit_offset, out=out,
    )  # fmt: skip


FAMILY = Family(
    name="mlp",
    summary="PyTorch: categorical embeddings + MLP (LayerNorm, GELU, dropout), DDP",
    params=MLPParams,
    train=train,
    export=export,
    distributed=True,
)
