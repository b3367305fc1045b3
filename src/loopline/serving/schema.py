"""Request and response types of the prediction API, generated from the data contract.

Every record field is declared once, in the contract; here it becomes a strict pydantic
field: integers must be JSON integers, floats must be finite, categories must be allowed,
codes must match their pattern, unknown keys are rejected, and the contract's field kinds
are checked: the date-part fields of a record must form a real date, HHMM clocks must
have minutes 00-59, and the contract's `ValueTogether` and `FieldOrder` rules over record
fields hold (a flight may not land where it left, a dew point not exceed its temperature).
Nullable fields may be omitted or null. Errors name the field.

A record is a `TypedDict`, so validation (in pydantic's Rust core, straight from the
request bytes) yields plain dicts: no model objects to build and dump again per record.
`RequestSchema` holds the validator of a whole `/predict` body and its JSON Schema.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Annotated, Any, Literal, NotRequired

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, TypeAdapter, with_config
from typing_extensions import TypedDict  # pydantic needs this one before Python 3.12

from loopline.data.contract import CALENDAR_PARTS, DataContract, Field_, FieldOrder, ValueTogether

MAX_STRING_LENGTH = 64
STRICT = ConfigDict(strict=True, extra="forbid")


def _across_fields(
    date_parts: dict[str, str],
    clocks: tuple[str, ...],
    rules: tuple[ValueTogether | FieldOrder, ...],
) -> Any:
    """A validator of a whole record: dates that exist, HHMM `clocks` to minute 59, `rules`.

    `date_parts` maps "year", "month" and "day" to the record fields holding them (the
    contract's `date_part` kind); without all three there is no date to check. `rules` are
    the contract's `ValueTogether` and `FieldOrder` rules over record fields only; a rule
    with a field missing or null is not judged, as in the data gate.
    """
    parts = [date_parts.get(part) for part in CALENDAR_PARTS]
    date_fields = parts if all(parts) else None

    def check(values: dict[str, Any]) -> dict[str, Any]:
        if date_fields and all(values.get(name) is not None for name in date_fields):
            try:
                dt.date(*(values[name] for name in date_fields))
            except ValueError as error:
                raise ValueError(f"{'/'.join(date_fields)}: {error}") from None
        for name in clocks:
            if values.get(name) is not None and values[name] % 100 > 59:
                raise ValueError(f"{name}: {values[name]} is not a HHMM clock time")
        for rule in rules:
            if not _obeys(rule, values):
                raise ValueError(f"breaks the contract's rule {rule.name}")
        return values

    return AfterValidator(check)


def _obeys(rule: ValueTogether | FieldOrder, values: dict[str, Any]) -> bool:
    """Whether one record obeys `rule` (True where it is not judged: a field is null)."""
    if isinstance(rule, FieldOrder):
        left, right = values.get(rule.left), values.get(rule.right)
        return left is None or right is None or bool(rule.holds(left, right))
    if any(values.get(name) is None for name in rule.judged_columns()):
        return True
    holds = values[rule.column] == rule.value
    return all(holds == (values.get(name) == value) for name, value in rule.then.items())


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


def required_fields(contract: DataContract) -> set[str]:
    """The record fields that may not be absent or null (the rest are optional)."""
    return {f.name for f in contract.record_fields() if not f.nullable}


def record_type(contract: DataContract, name: str) -> Any:
    """One prediction input called `name` (`FlightRecord`), field by field from the contract.

    Nullable fields may be left out (NotRequired); the rest are required.
    """
    record_fields = contract.record_fields()
    fields = {
        field.name: NotRequired[_annotation(field)] if field.nullable else _annotation(field)
        for field in record_fields
    }
    record = TypedDict(name, fields)  # type: ignore[misc, operator]
    record.__pydantic_config__ = STRICT  # type: ignore[attr-defined]
    clocks = tuple(field.name for field in record_fields if field.clock)
    date_parts = {field.date_part: field.name for field in record_fields if field.date_part}
    names = {field.name for field in record_fields}
    rules = tuple(
        rule
        for rule in contract.row_rules
        if isinstance(rule, ValueTogether | FieldOrder) and set(rule.columns()) <= names
    )
    return Annotated[record, _across_fields(date_parts, clocks, rules)]


@dataclass(frozen=True)
class RequestSchema:
    """The `/predict` body, `{"records": [record, ...]}`: its validator and JSON Schema."""

    adapter: TypeAdapter
    record_adapter: TypeAdapter

    @classmethod
    def of(cls, contract: DataContract, max_records: int, record_name: str) -> RequestSchema:
        """The body schema of a dataset's contract, with 1..`max_records` records.

        `record_name` names the record type in the JSON Schema (`FlightRecord`).
        """
        record = record_type(contract, record_name)
        records = Annotated[list[record], Field(min_length=1, max_length=max_records)]  # type: ignore[valid-type]

        @with_config(STRICT)
        class PredictRequest(TypedDict):
            records: records  # type: ignore[valid-type]

        return cls(TypeAdapter(PredictRequest), TypeAdapter(record))

    def records(self, raw: bytes) -> list[dict[str, Any]]:
        """The validated records of a raw JSON body; pydantic.ValidationError names the field."""
        return self.adapter.validate_json(raw)["records"]

    def json_schema(self) -> dict[str, Any]:
        """The body's JSON Schema with its definitions inlined (no `$ref`)."""
        return _inline(self.adapter.json_schema())

    def record_json_schema(self) -> dict[str, Any]:
        """One record's JSON Schema."""
        return _inline(self.record_adapter.json_schema())


def _inline(schema: dict[str, Any]) -> dict[str, Any]:
    """`schema` with every `{"$ref": "#/$defs/X"}` replaced by X (OpenAPI 3.0 has no $defs)."""
    definitions = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            if "$ref" in node:
                return resolve(definitions[node["$ref"].rsplit("/", 1)[-1]])
            return {key: resolve(value) for key, value in node.items()}
        if isinstance(node, list):
            return [resolve(value) for value in node]
        return node

    return resolve(schema)


class Prediction(BaseModel):
    """One scored record."""

    prediction_id: str
    probability: float = Field(ge=0, le=1, description="Probability of the positive class")
    label: int = Field(ge=0, le=1, description="1 if probability >= the model's threshold")
    model_name: str
    model_version: str


class PredictResponse(BaseModel):
    """All predictions of one request, in request order."""

    request_id: str
    predictions: list[Prediction]
