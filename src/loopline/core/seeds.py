"""One place that seeds every random number generator a run touches."""

from __future__ import annotations

import os
import random

import numpy as np


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and PyTorch (if installed) from the params.yaml `seed`.

    Libraries with their own generators (scikit-learn, XGBoost) take the seed as an
    argument (`random_state`) from the same value.
    """
    os.environ["PYTHONHASHSEED"] = str(seed)
    random.seed(seed)
    np.random.seed(seed)
    try:
        import torch  # noqa: PLC0415 - optional here: only the torch path needs it
    except ImportError:  # pragma: no cover - torch is a core dependency
        return
    torch.manual_seed(seed)
