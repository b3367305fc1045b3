"""The data contract: one declaration of every input field, from which the rest is built.

A contract lists, per table, each column's type, role, nullability and allowed values,
plus the links between tables. The Great Expectations suite (validation), the serving
request schema and the monitoring column mapping are all generated from it, so there is
no second hand-written list of columns anywhere.

Types describe the values, not the storage: a nullable `int` column arrives in pandas as
float64 (NaN stands for missing), which the type check accepts.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

DType = Literal["int", "float", "string", "datetime"]
# How monitoring treats a record field: "share" counts toward the drift share that can
# trigger retraining; "report" is tested and shown per feature but does not count;
# "skip" is not tested (identifiers, calendar parts).
DriftUse = Literal["share", "report", "skip"]

# pandas dtypes that hold each contract type (as reported by `str(series.dtype)`).
PANDAS_DTYPES: dict[str, tuple[str, ...]] = {
    "int": ("int64", "int32", "Int64", "Int32"),
    "float": ("float64", "float32", "Float64"),
    "string": ("object", "string", "str"),
    # Datetimes are stored naive, in UTC: Great Expectations cannot type-check tz-aware ones.
    "datetime": ("datetime64[ns]", "datetime64[us]"),
}


def pandas_dtypes(field: Field_) -> tuple[str, ...]:
    """The pandas dtype names a column of `field` may have (nullable ints may be float)."""
    if field.dtype == "int" and field.nullable:
        return PANDAS_DTYPES["int"] + PANDAS_DTYPES["float"]
    return PANDAS_DTYPES[field.dtype]


class Role(StrEnum):
    """What a column is for; decides whether it may ever reach a model."""

    KEY = "key"  # identifies a row or joins tables
    TIME = "time"  # places the row in time (part of the event timestamp)
    FEATURE = "feature"  # known at prediction time: may be a model input
    TARGET = "target"  # what the model predicts (or the raw value it is derived from)
    OUTCOME = "outcome"  # known only after the event: never a feature (leakage)
    ATTRIBUTE = "attribute"  # descriptive or redundant: kept, validated, not modelled


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Field_(_Frozen):  # noqa: N801 - `Field` is pydantic's; the trailing _ avoids the clash
    """One column: its type, role, allowed values and null policy."""

    name: str
    dtype: DType
    role: Role
    description: str
    nullable: bool = False
    max_null_fraction: float = Field(0.0, ge=0.0, le=1.0)
    min: float | None = None
    max: float | None = None
    allowed: tuple[str, ...] | None = None
    pattern: str | None = None
    mostly: float = Field(1.0, gt=0.0, le=1.0)
    in_record: bool = False
    drift: DriftUse = "share"

    @model_validator(mode="after")
    def _consistent(self) -> Field_:
        if self.max_null_fraction > 0 and not self.nullable:
            raise ValueError(f"{self.name}: max_null_fraction > 0 needs nullable=True")
        if self.nullable and self.max_null_fraction == 0:
            raise ValueError(f"{self.name}: nullable fields state max_null_fraction > 0")
        if (self.min is not None or self.max is not None) and self.dtype not in ("int", "float"):
            raise ValueError(f"{self.name}: min/max only apply to int and float fields")
        if (self.allowed or self.pattern) and self.dtype != "string":
            raise ValueError(f"{self.name}: allowed/pattern only apply to string fields")
        if self.in_record and self.role in (Role.TARGET, Role.OUTCOME):
            raise ValueError(f"{self.name}: a {self.role} field cannot be a prediction input")
        return self

    @property
    def numeric(self) -> bool:
        """True for int and float fields (tested as numbers by drift monitoring)."""
        return self.dtype in ("int", "float")


class Table(_Frozen):
    """A raw table: its columns in storage order and its primary key."""

    name: str
    fields: tuple[Field_, ...]
    key: tuple[str, ...]
    description: str

    @model_validator(mode="after")
    def _key_is_declared(self) -> Table:
        names = self.column_names()
        if len(set(names)) != len(names):
            raise ValueError(f"{self.name}: duplicate column names")
        missing = [k for k in self.key if k not in names]
        if missing:
            raise ValueError(f"{self.name}: key columns {missing} are not declared fields")
        return self

    def column_names(self) -> tuple[str, ...]:
        """Column names in storage order."""
        return tuple(f.name for f in self.fields)

    def field(self, name: str) -> Field_:
        """The field called `name` (KeyError if undeclared)."""
        for candidate in self.fields:
            if candidate.name == name:
                return candidate
        raise KeyError(f"{self.name}.{name} is not in the contract")


class Link(_Frozen):
    """A reference from one table's columns to another table's key (a foreign key).

    `min_coverage` is the share of non-null source rows whose key must be found: real data
    is rarely complete (some tail numbers are missing from the planes registry).
    """

    source: str
    columns: tuple[str, ...]
    target: str
    target_columns: tuple[str, ...]
    min_coverage: float = Field(1.0, gt=0.0, le=1.0)

    @property
    def name(self) -> str:
        """A readable label such as `flights.tailnum->planes`."""
        return f"{self.source}.{'+'.join(self.columns)}->{self.target}"


class DataContract(_Frozen):
    """All tables of a dataset and the links between them."""

    tables: tuple[Table, ...]
    links: tuple[Link, ...] = ()

    @model_validator(mode="after")
    def _links_resolve(self) -> DataContract:
        for link in self.links:
            for table, columns in ((link.source, link.columns), (link.target, link.target_columns)):
                declared = self.table(table).column_names()
                unknown = [c for c in columns if c not in declared]
                if unknown:
                    raise ValueError(f"link {link.name}: {table} has no columns {unknown}")
        return self

    def table(self, name: str) -> Table:
        """The table called `name` (KeyError if undeclared)."""
        for candidate in self.tables:
            if candidate.name == name:
                return candidate
        raise KeyError(f"table {name!r} is not in the contract")

    def table_names(self) -> tuple[str, ...]:
        """Declared table names."""
        return tuple(t.name for t in self.tables)

    def record_fields(self) -> tuple[Field_, ...]:
        """The fields of one prediction request, in contract order.

        A record is what a caller sends to the model: every field marked `in_record`,
        across tables, each name once.
        """
        seen: dict[str, Field_] = {}
        for table in self.tables:
            for field in table.fields:
                if field.in_record and field.name not in seen:
                    seen[field.name] = field
        return tuple(seen.values())

    def drift_fields(self, use: DriftUse) -> tuple[Field_, ...]:
        """Record fields that drift monitoring uses in the given way."""
        return tuple(f for f in self.record_fields() if f.drift == use)
