"""The PyTorch tabular network and its scikit-learn-style inference wrapper.

TabularMLP: one embedding per categorical column (dimension grows with cardinality, capped),
concatenated with the numeric features, then blocks of Linear -> LayerNorm -> GELU -> Dropout
and a single logit. LayerNorm (not BatchNorm) keeps each row's output independent of the
batch, so training with 1 or N processes and serving one record or many agree.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from torch import nn

WEIGHTS_FILE = "weights.safetensors"  # what rank 0 of mlp_train writes: the best state dict
CHECKPOINT_FILE = "checkpoint.json"  # ... and its shape, logit offset and training history


@dataclass(frozen=True)
class MLPShape:
    """Everything needed to rebuild the network: inputs, widths and dropout."""

    numeric: tuple[str, ...]
    categorical: tuple[str, ...]
    cardinalities: tuple[int, ...]
    embedding_max_dim: int
    hidden: tuple[int, ...]
    dropout: float

    def embedding_dims(self) -> list[int]:
        """Embedding width per categorical column: about half its cardinality, capped."""
        return [max(2, min(self.embedding_max_dim, (size + 1) // 2)) for size in self.cardinalities]


class TabularMLP(nn.Module):
    """Categorical embeddings + MLP -> one logit per row."""

    def __init__(self, shape: MLPShape) -> None:
        super().__init__()
        dims = shape.embedding_dims()
        self.embeddings = nn.ModuleList(
            nn.Embedding(size, dim) for size, dim in zip(shape.cardinalities, dims, strict=True)
        )
        layers: list[nn.Module] = []
        width = len(shape.numeric) + sum(dims)
        for hidden in shape.hidden:
            layers += [
                nn.Linear(width, hidden),
                nn.LayerNorm(hidden),
                nn.GELU(),
                nn.Dropout(shape.dropout),
            ]
            width = hidden
        layers.append(nn.Linear(width, 1))
        self.body = nn.Sequential(*layers)

    def forward(self, numeric: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        """Logits, shape (rows,), from float numerics (rows, n) and int64 codes (rows, c)."""
        embedded = [table(codes[:, i]) for i, table in enumerate(self.embeddings)]
        return self.body(torch.cat([numeric, *embedded], dim=1)).squeeze(1)


def to_tensors(features: pd.DataFrame, shape: MLPShape) -> tuple[torch.Tensor, torch.Tensor]:
    """Numeric (float32) and categorical (int64) tensors from a feature frame."""
    numeric = torch.from_numpy(features[list(shape.numeric)].to_numpy(dtype=np.float32))
    codes = torch.from_numpy(features[list(shape.categorical)].to_numpy(dtype=np.int64))
    return numeric, codes


class MLPClassifier(ClassifierMixin, BaseEstimator):
    """A trained TabularMLP behind `predict_proba`, for use inside a sklearn Pipeline.

    Holds the weights as CPU tensors (picklable); inference runs on the CPU in batches.
    `logit_offset` is added to every logit (it undoes the shift that class weighting put
    into training, see mlp_train).
    """

    def __init__(
        self,
        shape: MLPShape,
        state: dict[str, torch.Tensor],
        logit_offset: float = 0.0,
        batch_size: int = 8192,
    ) -> None:
        self.shape = shape
        self.state = state
        self.logit_offset = logit_offset
        self.batch_size = batch_size
        self.classes_ = np.array([0, 1])

    def __sklearn_is_fitted__(self) -> bool:
        return True

    def fit(self, features: pd.DataFrame, y: object = None) -> MLPClassifier:
        """Not supported: the weights come from distributed training (mlp_train)."""
        raise NotImplementedError(
            "MLPClassifier wraps weights trained under torchrun "
            "(loopline.training.families.mlp.ddp)"
        )

    def _network(self) -> TabularMLP:
        network = getattr(self, "_cached_network", None)
        if network is None:
            network = TabularMLP(self.shape)
            network.load_state_dict(self.state)
            network.eval()
            self._cached_network = network
        return network

    def predict_proba(self, features: pd.DataFrame) -> np.ndarray:
        """Columns: P(on time), P(late)."""
        numeric, codes = to_tensors(features, self.shape)
        network = self._network()
        chunks = []
        with torch.inference_mode():
            for start in range(0, len(numeric), self.batch_size):
                stop = start + self.batch_size
                logits = network(numeric[start:stop], codes[start:stop]) + self.logit_offset
                chunks.append(torch.sigmoid(logits))
        late = torch.cat(chunks).double().numpy() if chunks else np.zeros(0)
        return np.column_stack([1.0 - late, late])

    def predict(self, features: pd.DataFrame) -> np.ndarray:
        """0/1 at probability 0.5 (the compiled scorer applies the tuned threshold)."""
        return (self.predict_proba(features)[:, 1] >= 0.5).astype(int)

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state.pop("_cached_network", None)
        return state


def shape_as_dict(shape: MLPShape) -> dict:
    """JSON-friendly form of a shape (for checkpoints and logs)."""
    return asdict(shape)


def shape_from_dict(data: dict) -> MLPShape:
    """Inverse of `shape_as_dict` (JSON lists back to tuples)."""
    return MLPShape(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})
