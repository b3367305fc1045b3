"""A PyTorch tabular network: categorical embeddings + MLP, trained with DDP under torchrun.

`network` is the model, `ddp` the training script every torchrun process runs, `launch`
starts it (one node, or several). Exported as its weights (safetensors) and scored by a
NumPy forward pass: serving needs no PyTorch.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from loopline.core.errors import LooplineError
from loopline.scoring.features import FeatureTables
from loopline.scoring.formats import write_mlp
from loopline.training.families import Family, Fitted, TrainContext
from loopline.training.families.mlp.params import MLPParams
from loopline.training.feature_sets import FeatureSets


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
