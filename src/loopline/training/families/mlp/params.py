"""The MLP family's settings, `train.mlp` (apart, so its scripts import it alone)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from loopline.core.params import Section


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
