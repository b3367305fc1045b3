"""Request and response models of the prediction API, generated from the data contract.

Every record field is declared once, in the contract; here it becomes a strict pydantic
field: integers must be JSON integers, floats must be finite, categories must be allowed,
codes must match their pattern, unknown keys are rejected, and impossible dates or clock
times fail. Nullable fields may be omitted or null. Errors name the field.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model, model_validator

from loopline.contract import DataContract, Field_

MAX_STRING_LENGTH = 64


class _StrictRecord(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    @model_validator(mode="after")
    def _real_calendar_and_clock(self) -> _StrictRecord:
        values = self.__dict__
        if {"year", "month", "day"} <= values.keys():
            try:
                dt.date(values["year"], values["month"], values["day"])
            except ValueError as error:
                raise ValueError(f"year/month/day: {error}") from None
        for name in ("sched_dep_time", "sched_arr_time"):
            if name in values and values[name] is not None and values[name] % 100 > 59:
                raise ValueError(f"{name}: {values[name]} is not a HHMM clock time")
        return self


def _annotation(field: Field_) -> Any:
    """The pydantic type of one contract field."""
    if field.dtype == "int":
        base: Any = Annotated[int, Field(ge=field.min, le=field.max, description=field.description)]
    elif field.dtype == "float":
        base = Annotated[
            float,
            Field(ge=field.min, le=field.max, allow_inf_nan=False, description=field.description),
        ]
    elif field.allowed:
        base = Annotated[Literal[field.allowed], Field(description=field.description)]  # type: ignore[valid-type]
    else:
        base = Annotated[
            str,
            Field(pattern=f"^{field.pattern}$" if field.pattern else None, min_length=1,
                  max_length=MAX_STRING_LENGTH, description=field.description),
        ]  # fmt: skip
    return base | None if field.nullable else base


def record_model(contract: DataContract) -> type[BaseModel]:
    """`FlightRecord`: one prediction input, field by field from the contract."""
    fields: dict[str, Any] = {}
    for field in contract.record_fields():
        fields[field.name] = (_annotation(field), None if field.nullable else ...)
    return create_model("FlightRecord", __base__=_StrictRecord, **fields)


class Prediction(BaseModel):
    """One scored record."""

    prediction_id: str
    probability: float = Field(ge=0, le=1, description="Probability of arriving 15+ min late")
    label: int = Field(ge=0, le=1, description="1 if probability >= the model's threshold")
    model_name: str
    model_version: str


class PredictResponse(BaseModel):
    """All predictions of one request, in request order."""

    request_id: str
    predictions: list[Prediction]
