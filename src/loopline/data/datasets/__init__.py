"""Datasets Loopline can run on, by the name params.yaml gives (`dataset.name`)."""

from __future__ import annotations

from loopline.core.errors import ConfigError
from loopline.data.datasets.base import Dataset
from loopline.data.datasets.nycflights13 import NycFlights13
from loopline.data.datasets.wa_churn import WaChurn

_DATASETS: dict[str, type[Dataset]] = {d.name: d for d in (NycFlights13, WaChurn)}


def get_dataset(name: str) -> Dataset:
    """The dataset registered under `name`."""
    try:
        return _DATASETS[name]()
    except KeyError:
        raise ConfigError(
            f"dataset.name {name!r} is unknown; available: {sorted(_DATASETS)}"
        ) from None
