"""Exceptions Loopline raises on purpose, each naming what is wrong and what to do."""

from __future__ import annotations


class LooplineError(Exception):
    """Base class: an expected failure with a message meant for the person running the job."""


class ConfigError(LooplineError):
    """params.yaml (or an override) does not describe a valid configuration."""


class DataContractError(LooplineError):
    """Data does not match the data contract (missing table, column or impossible value)."""


class DataValidationError(LooplineError):
    """The Great Expectations suite found failed expectations in the raw tables."""


class DataVersionError(LooplineError):
    """The data in the work tree is not the version that data.dvc pins."""
