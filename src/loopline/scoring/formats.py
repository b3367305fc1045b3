"""The safe file formats a compiled scorer's estimator is kept in, each written and read here.

| kind       | file                 | what it holds            | scored by                       |
|------------|----------------------|--------------------------|---------------------------------|
| `xgboost`  | `model.ubj`          | XGBoost's own UBJSON     | XGBoost (GTIL for a few rows)   |
| `treelite` | `model.tl`           | a Treelite checkpoint    | Treelite GTIL                   |
| `linear`   | `linear.safetensors` | weight arrays            | NumPy (one dot product)         |
| `mlp`      | `mlp.safetensors`    | an MLP's weights         | NumPy forward pass              |

A model family (`loopline.training.families`) exports its fitted estimator with one of
the `write_*` functions, which returns the manifest entry; `load_estimator` reads any of
them back. A loaded estimator maps the featurizer's float32 array (rows, features) to
P(positive) as float64. NumPy, XGBoost and Treelite are all a serving process needs: no
scikit-learn, no PyTorch, and nothing in these files can run code when it is loaded.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import treelite
import xgboost
from safetensors.numpy import load_file, save_file
from scipy.special import erf, expit

from loopline.core.errors import LooplineError

LAYER_NORM_EPS = 1e-5  # torch.nn.LayerNorm's default, used by the MLP family's network


class ScorerError(LooplineError):
    """A compiled scorer is missing, damaged, of an unknown format or disagrees with training."""


class Estimator(Protocol):
    """A loaded estimator: features in, probability of the positive class out."""

    def predict(self, features: np.ndarray) -> np.ndarray:
        """P(positive) per row, float64, from the featurizer's float32 array."""


# -- XGBoost ------------------------------------------------------------------------------------


class XGBoostEstimator:
    """An XGBoost booster from UBJSON, scored in place on the float32 array.

    XGBoost's `inplace_predict` has a fixed cost of about 0.4 ms a call, which dominates
    a one-record request; below `SMALL_BATCH` rows the same trees are walked by Treelite's
    GTIL instead (converted in memory from the loaded booster at load; the two agree to
    float32 rounding, about 1e-7, well inside the 1e-5 parity tolerance).
    """

    SMALL_BATCH = 16

    def __init__(self, path: Path, threads: int, entry: Mapping[str, Any]) -> None:
        self.booster = xgboost.Booster()
        self.booster.load_model(path)
        self.booster.set_param({"nthread": threads})
        self.booster.feature_names = None  # columns are positional: the featurizer's order
        self.small = treelite.frontend.from_xgboost(self.booster)

    def predict(self, features: np.ndarray) -> np.ndarray:
        """Probabilities (the booster's logistic output)."""
        if len(features) < self.SMALL_BATCH:
            small = treelite.gtil.predict(self.small, features, nthread=1)
            return small.reshape(-1).astype("float64")
        return self.booster.inplace_predict(features, validate_features=False).astype("float64")


def write_xgboost(booster: xgboost.Booster, out: Path) -> dict[str, Any]:
    """Save a booster (already cut to the trees to keep) as UBJSON."""
    booster.save_model(out / "model.ubj")
    return {"kind": "xgboost", "file": "model.ubj", "trees": booster.num_boosted_rounds()}


# -- tree ensembles through Treelite -----------------------------------------------------------


class TreeliteEstimator:
    """A tree ensemble from a Treelite checkpoint, scored by Treelite's GTIL."""

    def __init__(self, path: Path, threads: int, entry: Mapping[str, Any]) -> None:
        self.model = treelite.Model.deserialize(str(path))
        self.threads = threads

    def predict(self, features: np.ndarray) -> np.ndarray:
        """Probabilities (GTIL applies the model's sigmoid)."""
        return treelite.gtil.predict(self.model, features, nthread=self.threads).reshape(-1)


def write_treelite(model: treelite.Model, out: Path) -> dict[str, Any]:
    """Save a Treelite model (from any framework Treelite imports) as a checkpoint."""
    model.serialize(str(out / "model.tl"))
    return {"kind": "treelite", "file": "model.tl", "trees": model.num_tree}


# -- logistic regression as arrays -------------------------------------------------------------


class LinearEstimator:
    """Logistic regression on scaled numerics and one-hot codes, as weight arrays.

    A one-hot column times its weight is a lookup: the logit is numeric @ weights plus,
    per categorical column, the weight of the row's code, plus the intercept.
    """

    def __init__(self, path: Path, threads: int, entry: Mapping[str, Any]) -> None:
        arrays = load_file(path)
        self.weights = arrays["numeric_weights"]
        self.category_weights = arrays["category_weights"]
        self.offsets = arrays["category_offsets"]
        self.intercept = float(arrays["intercept"][0])

    def predict(self, features: np.ndarray) -> np.ndarray:
        """sigmoid(logit) per row, in float64."""
        numeric = len(self.weights)
        logit = features[:, :numeric].astype("float64") @ self.weights + self.intercept
        codes = features[:, numeric:].astype("int64") + self.offsets
        logit += self.category_weights[codes].sum(axis=1)
        return expit(logit)


def write_linear(
    coefficients: np.ndarray, intercept: float, cardinalities: list[int], out: Path
) -> dict[str, Any]:
    """Save a linear model over [numeric features..., one-hot codes per categorical column].

    `coefficients` are the numeric weights followed by every one-hot weight, the
    categorical columns in feature order with `cardinalities` codes each.
    """
    coefficients = np.asarray(coefficients, dtype="float64")
    numeric = len(coefficients) - sum(cardinalities)
    offsets = np.concatenate([[0], np.cumsum(cardinalities)[:-1]]).astype("int64")
    save_file(
        {
            "numeric_weights": np.ascontiguousarray(coefficients[:numeric]),
            "category_weights": np.ascontiguousarray(coefficients[numeric:]),
            "category_offsets": offsets,
            "intercept": np.array([intercept], dtype="float64"),
        },
        str(out / "linear.safetensors"),
    )
    return {"kind": "linear", "file": "linear.safetensors"}


# -- a tabular MLP as a NumPy forward pass ---------------------------------------------------------


class MLPEstimator:
    """An embedding MLP's inference in NumPy: embeddings, Linear -> LayerNorm -> GELU, logit.

    The weights are a state dict: `embeddings.<i>.weight`, then `body.<4k>` (Linear) and
    `body.<4k+1>` (LayerNorm) per hidden layer, then the output Linear; dropout is off at
    inference.
    """

    def __init__(self, path: Path, threads: int, entry: Mapping[str, Any]) -> None:
        state = load_file(path)
        self.numeric = int(entry["numeric"])
        self.logit_offset = float(entry["logit_offset"])
        tables = len([k for k in state if k.startswith("embeddings.")])
        self.embeddings = [state[f"embeddings.{i}.weight"] for i in range(tables)]
        hidden = int(entry["hidden_layers"])
        self.blocks = [
            tuple(state[f"body.{4 * i + j}.{p}"] for j, p in ((0, "weight"), (0, "bias"),
                                                               (1, "weight"), (1, "bias")))
            for i in range(hidden)
        ]  # fmt: skip
        self.out_weight = state[f"body.{4 * hidden}.weight"][0]
        self.out_bias = float(state[f"body.{4 * hidden}.bias"][0])

    def predict(self, features: np.ndarray) -> np.ndarray:
        """sigmoid(logit + offset) per row."""
        codes = features[:, self.numeric :].astype("int64")
        parts = [features[:, : self.numeric]]
        parts += [table[codes[:, i]] for i, table in enumerate(self.embeddings)]
        x = np.concatenate(parts, axis=1)
        for weight, bias, gain, shift in self.blocks:
            x = x @ weight.T + bias
            mean = x.mean(axis=1, keepdims=True)
            var = x.var(axis=1, keepdims=True)
            x = (x - mean) / np.sqrt(var + LAYER_NORM_EPS) * gain + shift
            x = 0.5 * x * (1.0 + erf(x / np.float32(np.sqrt(2.0))))  # exact GELU
        logit = x.astype("float64") @ self.out_weight + self.out_bias + self.logit_offset
        return expit(logit)


def write_mlp(
    state: Mapping[str, np.ndarray],
    *,
    numeric: int,
    hidden_layers: int,
    logit_offset: float,
    out: Path,
) -> dict[str, Any]:
    """Save an MLP's weights (float32 arrays by state-dict name) and its shape."""
    arrays = {k: np.ascontiguousarray(np.asarray(v, dtype="float32")) for k, v in state.items()}
    save_file(arrays, str(out / "mlp.safetensors"))
    return {
        "kind": "mlp", "file": "mlp.safetensors", "numeric": numeric,
        "hidden_layers": hidden_layers, "logit_offset": float(logit_offset),
    }  # fmt: skip


FORMATS: dict[str, type] = {
    "xgboost": XGBoostEstimator,
    "treelite": TreeliteEstimator,
    "linear": LinearEstimator,
    "mlp": MLPEstimator,
}


def load_estimator(entry: Mapping[str, Any], folder: Path, threads: int) -> Estimator:
    """The estimator a manifest entry describes, from the files in `folder`."""
    kind = entry["kind"]
    if kind not in FORMATS:
        raise ScorerError(f"{folder}: unknown estimator kind {kind!r} (a newer Loopline made it?)")
    return FORMATS[kind](folder / entry["file"], threads, entry)
