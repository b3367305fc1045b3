"""The data contract: one declaration of every input field, from which the rest is built.

A contract lists, per table, each column's type, role, nullability and allowed values,
plus the links between tables. The Great Expectations suite (validation), the serving
request schema and the monitoring column mapping are all generated from it, so there is
no second hand-written list of columns anywhere.

Real feeds break locally, so the contract also states rules that a whole-table limit
cannot see: rules across the columns of one row (`DateParts`, `ClockDelay`,
`NullTogether`, `ValueTogether`, `FieldOrder`) and rules per period of a time column and
per group (`GroupRule`: rows, null fraction, link coverage, distinct values per key, a
period's shift from its neighbours, per day, month, origin-day...).

Types describe the values, not the storage: a nullable `int` column arrives in pandas as
float64 (NaN stands for missing), which the type check accepts.
"""

from __future__ import annotations

import operator
from enum import StrEnum
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, model_validator

DType = Literal["int", "float", "string", "datetime"]
# A nullable field allowed at most this share of nulls is "rarely missing": live traffic
# where it is missing for (nearly) a whole day has a broken feed (monitoring.traffic).
RARELY_MISSING = 0.05
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


# A calendar date split over three int fields: each field says which part it holds.
CalendarPart = Literal["year", "month", "day"]
CALENDAR_PARTS: tuple[CalendarPart, ...] = get_args(CalendarPart)


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
    clock: bool = False  # an HHMM clock time: minutes must be 00-59 (hours bound by min/max)
    date_part: CalendarPart | None = None  # with its two siblings in the same record, a
    # calendar date that must exist (no 31 April, no 29 February 2013)

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
        if (self.clock or self.date_part) and self.dtype != "int":
            raise ValueError(f"{self.name}: clock (HHMM) and date-part fields are int")
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


DatePart = Literal["year", "month", "day", "hour", "minute"]
Period = Literal["day", "month"]
PERIOD_CODES: dict[Period, str] = dict(zip(get_args(Period), ("D", "M"), strict=True))


class DateParts(_Frozen):
    """Across columns: date parts stored beside a timestamp agree with it.

    `timestamp` is UTC (naive, as the contract stores datetimes); the parts are local
    time in `timezone`. `parts` maps each part column to what it holds, e.g.
    {"year": "year", "hour": "hour"}.
    """

    table: str
    timestamp: str
    timezone: str
    parts: dict[str, DatePart]

    @property
    def name(self) -> str:
        """e.g. `flights: year+month+day+hour agree with time_hour`."""
        return f"{self.table}: {'+'.join(self.parts)} agree with {self.timestamp}"

    def columns(self) -> tuple[str, ...]:
        """Every column the rule reads."""
        return (self.timestamp, *self.parts)


class ClockDelay(_Frozen):
    """Across columns: `delay` minutes = clock `actual` - clock `scheduled`, modulo a day.

    Both clocks are HHMM; rows where any of the three is null are not judged.
    """

    table: str
    actual: str
    scheduled: str
    delay: str

    @property
    def name(self) -> str:
        """e.g. `flights: dep_delay = dep_time - sched_dep_time`."""
        return f"{self.table}: {self.delay} = {self.actual} - {self.scheduled}"

    def columns(self) -> tuple[str, ...]:
        """Every column the rule reads."""
        return (self.actual, self.scheduled, self.delay)


class NullTogether(_Frozen):
    """Across columns: where `column` is null, each of `then` is null too."""

    table: str
    column: str
    then: tuple[str, ...]

    @property
    def name(self) -> str:
        """e.g. `flights: no dep_time -> no arr_time, arr_delay`."""
        return f"{self.table}: no {self.column} -> no {', '.join(self.then)}"

    def columns(self) -> tuple[str, ...]:
        """Every column the rule reads."""
        return (self.column, *self.then)


class ValueTogether(_Frozen):
    """Across columns: `column` holds `value` exactly when each of `then` holds its value.

    Categories that encode "not applicable" must agree: a customer without internet has
    "No internet service" in every add-on, and nobody else has it in any. A `then` value
    of None means "is null": a customer in the first month (tenure 0) has no total charge
    yet, and every other customer has one. Rows where a column compared with a value is
    null are not judged.
    """

    table: str
    column: str
    value: str | int
    then: dict[str, str | int | None]

    @property
    def name(self) -> str:
        """e.g. `customers: internet_service=No <-> online_security=No internet service`."""
        sides = ", ".join(f"{c}={'null' if v is None else v}" for c, v in self.then.items())
        return f"{self.table}: {self.column}={self.value} <-> {sides}"

    def judged_columns(self) -> tuple[str, ...]:
        """The columns that must be known for a row to be judged (not the null checks)."""
        return (self.column, *(c for c, v in self.then.items() if v is not None))

    def columns(self) -> tuple[str, ...]:
        """Every column the rule reads."""
        return (self.column, *self.then)


ORDER_WORDS = {"<": "is below", "<=": "is at most", "!=": "differs from"}
ORDER_TESTS = {"<": operator.lt, "<=": operator.le, "!=": operator.ne}


class FieldOrder(_Frozen):
    """Across columns: `left` is below, at most, or different from `right` in every row.

    An order a per-column range cannot see: each dew point lies inside the temperature
    range, yet one above its own row's temperature is a broken reading; a flight's
    destination is a valid airport, yet not its own origin. Rows where either is null are
    not judged. `why` says where the rule comes from.
    """

    table: str
    left: str
    relation: Literal["<", "<=", "!="]
    right: str
    why: str

    @property
    def name(self) -> str:
        """e.g. `weather: dewp is at most temp`."""
        return f"{self.table}: {self.left} {ORDER_WORDS[self.relation]} {self.right}"

    def columns(self) -> tuple[str, ...]:
        """Every column the rule reads."""
        return (self.left, self.right)

    def holds(self, left: Any, right: Any) -> Any:
        """Whether `left` and `right` (two values, or two columns, row by row) obey it."""
        return ORDER_TESTS[self.relation](left, right)


RowRule = DateParts | ClockDelay | NullTogether | ValueTogether | FieldOrder


class GroupRule(_Frozen):
    """A limit that must hold in every group, not just over the whole table.

    Groups are the `period` (day or month, in `timezone`) of the datetime column `time`,
    and/or the values of the `by` columns, e.g. per month, or per origin and day. Every
    period between the table's first and last is a group, so a period with no rows at
    all shows up (with 0 rows) instead of vanishing. The metric per group is its row
    count (`rows`), the null fraction of `column`, the share of its known values that are
    at least `at_least` (`share_at_least`, e.g. a label rate), the share of non-null
    keys found by the link named `link` (`link_coverage`), the number of distinct values
    of `column` (`distinct`: with the key columns as `by` and max 1, "a key determines an
    attribute", such as a route its distance), or how far the period's median of `column`
    departs from its neighbours' (`period_shift`: |median - mean of the previous and next
    periods' medians| in the period's standard deviations; a unit changed upstream for a
    month moves it while every value stays in range). With `relative`, min and max
    are multiples of the median group's value (a row count that holds for the full data
    and for a sample alike). `allowed_failures` groups may break the limit (known gaps of the real
    data; `why` says which), no more. `why` also says how the limit was chosen.

    Too few rows say nothing: a null fraction or coverage is judged only in groups of at
    least `min_group_rows` rows, and a `rows` rule only when the median group has that
    many.
    """

    table: str
    metric: Literal[
        "rows", "null_fraction", "share_at_least", "link_coverage", "distinct", "period_shift"
    ]
    column: str | None = None
    at_least: float | None = None  # share_at_least: the share of known values >= this
    link: str | None = None
    time: str | None = None
    period: Period | None = None
    timezone: str = "UTC"
    by: tuple[str, ...] = ()
    min: float | None = None
    max: float | None = None
    relative: bool = False
    min_group_rows: int = Field(0, ge=0)
    allowed_failures: int = Field(0, ge=0)
    why: str

    @model_validator(mode="after")
    def _complete(self) -> GroupRule:
        if (self.time is None) != (self.period is None):
            raise ValueError(f"{self.name}: give both `time` and `period`, or neither")
        if self.period is None and not self.by:
            raise ValueError(f"{self.name}: group by a period, by columns, or both")
        with_column = ("null_fraction", "share_at_least", "distinct", "period_shift")
        if (self.metric in with_column) != (self.column is not None):
            raise ValueError(f"{self.name}: {', '.join(with_column)} (and only they) need `column`")
        if self.metric == "period_shift" and self.period is None:
            raise ValueError(f"{self.name}: period_shift compares periods: give `period`")
        if (self.metric == "share_at_least") != (self.at_least is not None):
            raise ValueError(f"{self.name}: share_at_least (and only it) needs `at_least`")
        if (self.metric == "link_coverage") != (self.link is not None):
            raise ValueError(f"{self.name}: link_coverage (and only it) needs `link`")
        if self.min is None and self.max is None:
            raise ValueError(f"{self.name}: give a min, a max or both")
        return self

    @property
    def name(self) -> str:
        """e.g. `flights.arr_delay null fraction per month`, `flights rows per origin-day`."""
        what = {"rows": f"{self.table} rows",
                "null_fraction": f"{self.table}.{self.column} null fraction",
                "share_at_least": f"{self.table}.{self.column} >= {self.at_least} share",
                "link_coverage": f"{self.link} coverage",
                "distinct": f"{self.table}.{self.column} distinct values",
                "period_shift": f"{self.table}.{self.column} median shift from neighbours",
                }[self.metric]  # fmt: skip
        groups = [*self.by, *([self.period] if self.period else [])]
        return f"{what} per {'-'.join(groups)}"

    @property
    def limit(self) -> str:
        """The limit in words, e.g. `between 500 and 1300`."""
        unit = "x the median group" if self.relative else ""
        if self.min is not None and self.max is not None:
            return f"between {self.min:g}{unit} and {self.max:g}{unit}"
        return f">= {self.min:g}{unit}" if self.min is not None else f"<= {self.max:g}{unit}"

    def columns(self) -> tuple[str, ...]:
        """The columns of `table` the rule reads (a link's own columns excluded)."""
        named = (self.column, self.time, *self.by)
        return tuple(c for c in named if c is not None)


class DataContract(_Frozen):
    """All tables of a dataset, the links between them and the rules their rows obey."""

    tables: tuple[Table, ...]
    links: tuple[Link, ...] = ()
    row_rules: tuple[RowRule, ...] = ()
    group_rules: tuple[GroupRule, ...] = ()

    @model_validator(mode="after")
    def _links_resolve(self) -> DataContract:
        for link in self.links:
            for table, columns in ((link.source, link.columns), (link.target, link.target_columns)):
                declared = self.table(table).column_names()
                unknown = [c for c in columns if c not in declared]
                if unknown:
                    raise ValueError(f"link {link.name}: {table} has no columns {unknown}")
        links = {link.name for link in self.links}
        for rule in (*self.row_rules, *self.group_rules):
            declared = self.table(rule.table).column_names()
            unknown = [c for c in rule.columns() if c not in declared]
            if unknown:
                raise ValueError(f"rule {rule.name}: {rule.table} has no columns {unknown}")
            if isinstance(rule, GroupRule) and rule.link is not None and rule.link not in links:
                raise ValueError(f"rule {rule.name}: no link named {rule.link!r}")
        return self

    def link(self, name: str) -> Link:
        """The link called `name` (e.g. `flights.origin+time_hour->weather`)."""
        for candidate in self.links:
            if candidate.name == name:
                return candidate
        raise KeyError(f"link {name!r} is not in the contract")

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

    def rarely_missing_fields(self) -> tuple[Field_, ...]:
        """Nullable record fields allowed at most `RARELY_MISSING` nulls (outage-checked)."""
        return tuple(
            f for f in self.record_fields()
            if f.nullable and f.max_null_fraction <= RARELY_MISSING
        )  # fmt: skip

    def drift_fields(self, use: DriftUse) -> tuple[Field_, ...]:
        """Record fields that drift monitoring uses in the given way."""
        return tuple(f for f in self.record_fields() if f.drift == use)
