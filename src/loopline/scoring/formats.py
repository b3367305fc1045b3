"""Each model family's estimator in a format that cannot run code when it is loaded.

| family   | file                 | format                  | scored by                       |
|----------|----------------------|-------------------------|---------------------------------|
| xgboost  | `model.ubj`          | XGBoost's own UBJSON    | XGBoost (GTIL for a few rows)   |
| hist_gb  | `model.tl`           | Treelite checkpoint     | Treelite GTIL                   |
| logistic | `linear.safetensors` | weight arrays           | NumPy (one dot product)         |
| mlp      | `mlp.safetensors`    | the PyTorch state dict  | NumPy forward pass              |

`export_estimator` writes a fitted training-side estimator and returns its manifest
entry; `load_estimator` reads one back. A loaded estimator maps the featurizer's float32
array (rows, features) to P(positive) as float64. NumPy, XGBoost and Treelite are all a
serving process needs: no scikit-learn, no PyTorch, no unpickling.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import numpy as np
import treelite
import xgboost
from safetensors.numpy import load_file, save_file
from scipy.special import erf, expit

from loopline.core.errors import LooplineError
from loopline.scoring.features import FeatureTables

LAYER_NORM_EPS = 1e-5  # torch.nn.LayerNorm's default, used by TabularMLP


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

    def __init__(self, path: Path, threads: int) -> None:
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


def _export_xgboost(pipeline: Any, out: Path) -> dict:
    model = pipeline.named_steps["classify"]
    booster = model.get_booster()
    if model.best_iteration is not None:  # keep only the trees early stopping chose
        booster = booster[: model.best_iteration + 1]
    booster.save_model(out / "model.ubj")
    return {"kind": "xgboost", "file": "model.ubj", "trees": booster.num_boosted_rounds()}


# -- scikit-learn HistGradientBoosting through Treelite --------------------------------------------


class TreeliteEstimator:
    """A tree ensemble from a Treelite checkpoint, scored by Treelite's GTIL."""

    def __init__(self, path: Path, threads: int) -> None:
        self.model = treelite.Model.deserialize(str(path))
        self.threads = threads

    def predict(self, features: np.ndarray) -> np.ndarray:
        """Probabilities (GTIL applies the model's sigmoid)."""
        return treelite.gtil.predict(self.model, features, nthread=self.threads).reshape(-1)


def _export_hist_gb(estimator: Any, out: Path) -> dict:
    model = treelite.sklearn.import_model(estimator)
    model.serialize(str(out / "model.tl"))
    return {"kind": "treelite", "file": "model.tl", "trees": model.num_tree}


# -- logistic regression as arrays -------------------------------------------------------------


class LinearEstimator:
    """Logistic regression on scaled numerics and one-hot codes, as weight arrays.

    A one-hot column times its weight is a lookup: the logit is numeric @ weights plus,
    per categorical column, the weight of the row's code, plus the intercept.
    """

    def __init__(self, path: Path, threads: int) -> None:
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


def _export_logistic(pipeline: Any, tables: FeatureTables, out: Path) -> dict:
    model = pipeline.named_steps["classify"]
    coefficients = model.coef_[0].astype("float64")
    numeric = len(tables.numeric_features)
    sizes = [tables.cardinalities[c] for c in tables.categorical_features]
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype("int64")
    save_file(
        {
            "numeric_weights": np.ascontiguousarray(coefficients[:numeric]),
            "category_weights": np.ascontiguousarray(coefficients[numeric:]),
            "category_offsets": offsets,
            "intercept": model.intercept_.astype("float64"),
        },
        str(out / "linear.safetensors"),
    )
    return {"kind": "linear", "file": "linear.safetensors"}


# -- the MLP as a NumPy forward pass ---------------------------------------------------------------


class MLPEstimator:
    """TabularMLP's inference in NumPy: embeddings, Linear -> LayerNorm -> GELU, logit.

    Weights come from the training state dict (safetensors); dropout is off at inference.
    """

    def __init__(self, path: Path, threads: int, entry: dict) -> None:
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


def _export_mlp(estimator: Any, out: Path) -> dict:
    state = {k: v.detach().cpu().numpy().astype("float32") for k, v in estimator.state.items()}
    save_file({k: np.ascontiguousarray(v) for k, v in state.items()}, str(out / "mlp.safetensors"))
    return {
        "kind": "mlp",
        "file": "mlp.safetensors",
        "numeric": len(estimator.shape.numeric),
        "hidden_layers": len(estimator.shape.hidden),
        "logit_offset": float(estimator.logit_offset),
    }


# -- dispatch ----------------------------------------------------------------------------------


def export_estimator(family: str, estimator: Any, tables: FeatureTables, out: Path) -> dict:
    """Write `estimator` (as its family's `train` returned it) under `out`; its manifest entry."""
    if family == "xgboost":
        return _export_xgboost(estimator, out)
    if family == "hist_gb":
        return _export_hist_gb(estimator, out)
    if family == "logistic":
        return _export_logistic(estimator, tables, out)
    if family == "mlp":
        return _export_mlp(estimator, out)
    raise ScorerError(f"no compiled format for model family {family!r}")


def load_estimator(entry: dict, folder: Path, threads: int) -> Estimator:
    """The estimator a manifest entry describes, from the files in `folder`."""
    path = folder / entry["file"]
    kind = entry["kind"]
    if kind == "xgboost":
        return XGBoostEstimator(path, threads)
    if kind == "treelite":
        return TreeliteEstimator(path, threads)
    if kind == "linear":
        return LinearEstimator(path, threads)
    if kind == "mlp":
        return MLPEstimator(path, threads, entry)
    raise ScorerError(f"{folder}: unknown estimator kind {kind!r} (a newer Loopline made it?)")
