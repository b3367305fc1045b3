"""Great Expectations validation of the raw tables, generated from the data contract.

Each contract table becomes one expectation suite (columns, types, nulls, ranges, allowed
values, patterns, key uniqueness, row count). Three derived frames carry what no single
column shows, each validated by its own suite:

* `links`: per source row, whether each link's key was found (coverage over the table);
* `relations`: per row, whether each rule across columns holds (date parts agree with
  the timestamp, delays with clocks, nulls together; HHMM clocks have minutes 00-59);
* `groups`: per group (a day, a month, an origin-day...), each group rule's value, so one
  bad day or month fails on its own.

The outcome is a compact `ValidationReport` (JSON) plus GX Data Docs (HTML). Each failure
names the table or rule, the limit, what was observed and a few example rows or groups.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd
from pydantic import BaseModel

from loopline.core.errors import DataValidationError
from loopline.data import rules
from loopline.data.contract import DataContract, Field_, GroupRule, Link, Table, pandas_dtypes

log = logging.getLogger(__name__)

LINKS_TABLE = "links"
RELATIONS_TABLE = "relations"
GROUPS_TABLE = "groups"
EXAMPLE_ROWS = 5  # breaking rows or groups kept per failed rule


class ExpectationOutcome(BaseModel):
    """The result of one expectation, reduced to what a person needs to act on it."""

    table: str
    column: str | None
    expectation: str
    success: bool
    unexpected_count: int | None = None
    unexpected_percent: float | None = None
    observed: str | None = None
    limit: str | None = None
    examples: list[str] = []
    error: str | None = None

    def describe(self) -> str:
        """One line: where (table and column, or rule), expectation, limit, found, examples."""
        if self.table in (RELATIONS_TABLE, GROUPS_TABLE):
            where = self.column or self.table  # the column is named after the rule
        else:
            where = f"{self.table}.{self.column}" if self.column else self.table
        if self.error:
            found = f"error: {self.error}"
        elif self.unexpected_count is not None:
            unit = "groups" if self.table == GROUPS_TABLE else "rows"
            found = f"{self.unexpected_count} {unit} fail ({self.unexpected_percent or 0:.3f}%)"
        else:
            found = f"observed {self.observed}"
        line = f"{where}: {self.expectation} failed: {found}"
        if self.limit:
            line += f"; limit: {self.limit}"
        if self.examples:
            line += f"; e.g. {'; '.join(self.examples)}"
        return line


class ValidationReport(BaseModel):
    """All expectation outcomes of one validation run."""

    success: bool
    evaluated: int
    failed: int
    outcomes: list[ExpectationOutcome]

    def failures(self) -> list[ExpectationOutcome]:
        """Outcomes that failed."""
        return [o for o in self.outcomes if not o.success]

    def summary(self) -> str:
        """A readable multi-line summary, listing every failure."""
        head = f"{self.evaluated - self.failed} of {self.evaluated} expectations passed"
        if self.success:
            return head
        lines = [f"{head}; {self.failed} failed:"]
        lines += [f"  - {o.describe()}" for o in self.failures()]
        return "\n".join(lines)

    def raise_for_failures(self) -> None:
        """Raise DataValidationError naming every failed expectation."""
        if not self.success:
            raise DataValidationError(f"raw data failed validation: {self.summary()}")


# -- building suites from the contract -----------------------------------------------------


def _field_expectations(field: Field_, gx: Any) -> list[Any]:
    column = field.name
    expectations = [
        gx.expectations.ExpectColumnToExist(column=column),
        gx.expectations.ExpectColumnValuesToBeInTypeList(
            column=column, type_list=list(pandas_dtypes(field))
        ),
    ]
    if field.max_null_fraction < 1.0:
        expectations.append(
            gx.expectations.ExpectColumnValuesToNotBeNull(
                column=column, mostly=round(1.0 - field.max_null_fraction, 6)
            )
        )
    if field.min is not None or field.max is not None:
        expectations.append(
            gx.expectations.ExpectColumnValuesToBeBetween(
                column=column, min_value=field.min, max_value=field.max, mostly=field.mostly
            )
        )
    if field.allowed:
        expectations.append(
            gx.expectations.ExpectColumnValuesToBeInSet(
                column=column, value_set=list(field.allowed), mostly=field.mostly
            )
        )
    if field.pattern:
        expectations.append(
            gx.expectations.ExpectColumnValuesToMatchRegex(
                column=column, regex=f"^{field.pattern}$", mostly=field.mostly
            )
        )
    return expectations


def _table_expectations(table: Table, min_rows: int, gx: Any) -> list[Any]:
    expectations = [
        gx.expectations.ExpectTableColumnsToMatchSet(
            column_set=list(table.column_names()), exact_match=True
        ),
        gx.expectations.ExpectTableRowCountToBeBetween(min_value=min_rows),
    ]
    if len(table.key) == 1:
        expectations.append(gx.expectations.ExpectColumnValuesToBeUnique(column=table.key[0]))
    else:
        expectations.append(
            gx.expectations.ExpectCompoundColumnsToBeUnique(column_list=list(table.key))
        )
    for field in table.fields:
        expectations.extend(_field_expectations(field, gx))
    return expectations


def link_column(link: Link) -> str:
    """Column of the links frame recording whether `link` resolved, row by row."""
    return f"{link.source}.{'+'.join(link.columns)}->{link.target}"


def build_links_frame(tables: Mapping[str, pd.DataFrame], contract: DataContract) -> pd.DataFrame:
    """Per source row and link: True if the key is found in the target, None if key is null.

    Links whose columns are missing from a table are skipped here: the table's own
    column expectations already report the missing column.
    """
    columns: dict[str, pd.Series] = {}
    for link in contract.links:
        if _link_readable(tables, link):
            columns[link_column(link)] = rules.link_found(link, tables)
    return pd.DataFrame(columns)


def _link_readable(tables: Mapping[str, pd.DataFrame], link: Link) -> bool:
    return _readable(tables, link.source, link.columns) and _readable(
        tables, link.target, link.target_columns
    )


def _readable(tables: Mapping[str, pd.DataFrame], table: str, columns: tuple[str, ...]) -> bool:
    """True if `table` has every one of `columns` (else its own suite reports the gap)."""
    return set(columns) <= set(tables[table].columns)


def _clock_column(table: str, field: Field_) -> str:
    return f"{table}.{field.name}: HHMM minutes 00-59"


def build_relations_frame(
    tables: Mapping[str, pd.DataFrame], contract: DataContract
) -> tuple[pd.DataFrame, dict[str, list[str]]]:
    """One column per rule across columns (and per HHMM clock field): each row's verdict.

    Tables differ in length, so each column holds its own table's rows and None after.
    Also returns, per column, a few breaking rows (their key and the rule's columns).
    """
    verdicts: dict[str, pd.Series] = {}
    shown: dict[str, tuple[str, ...]] = {}
    for table in contract.tables:
        for field in table.fields:
            if field.clock and _readable(tables, table.name, (field.name,)):
                values = tables[table.name][field.name]
                name = _clock_column(table.name, field)
                verdicts[name] = rules.clock_verdicts(values)
                shown[name] = (table.name, field.name)
    for rule in contract.row_rules:
        if _readable(tables, rule.table, rule.columns()):
            verdicts[rule.name] = rules.row_verdicts(rule, tables[rule.table])
            shown[rule.name] = (rule.table, *rule.columns())
    examples = {
        name: _example_rows(tables[columns[0]], verdicts[name], contract.table(columns[0]).key,
                            columns[1:])
        for name, columns in shown.items()
    }  # fmt: skip
    if not verdicts:  # a contract without row rules or clock fields
        return pd.DataFrame(), examples
    frame = pd.concat(
        [v.reset_index(drop=True).rename(n) for n, v in verdicts.items()], axis=1
    ).astype(object)
    return frame.where(frame.notna(), None), examples


def _example_rows(
    frame: pd.DataFrame, verdicts: pd.Series, key: tuple[str, ...], columns: tuple[str, ...]
) -> list[str]:
    bad = frame[verdicts.eq(False)].head(EXAMPLE_ROWS)
    shown = list(dict.fromkeys([*key, *columns]))
    return [
        " ".join(f"{c}={_value(row[c])}" for c in shown if c in frame.columns)
        for _, row in bad.iterrows()
    ]


def _value(value: object) -> str:
    """A value as an example shows it (a float to 6 significant digits, not 23.8999999)."""
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def build_groups_frame(
    tables: Mapping[str, pd.DataFrame], contract: DataContract
) -> tuple[pd.DataFrame, dict[str, list[str]]]:
    """One column per group rule: its value for each group (NaN pads shorter columns).

    Also returns, per rule, the groups furthest outside its limit, as `group=value`.
    """
    values: dict[str, pd.Series] = {}
    examples: dict[str, list[str]] = {}
    keys_cache: dict = {}
    for rule in contract.group_rules:
        link = contract.link(rule.link) if rule.link else None
        if not _readable(tables, rule.table, rule.columns()) or (
            link and not _link_readable(tables, link)
        ):
            continue
        per_group = rules.group_values(rule, tables, contract, keys_cache)
        values[rule.name] = per_group.reset_index(drop=True)
        worst = rules.breaking(per_group, rule).head(EXAMPLE_ROWS)
        unit = "x median" if rule.relative else ""
        examples[rule.name] = [f"{group}={value:.4g}{unit}" for group, value in worst.items()]
        if rule.metric == "distinct" and len(worst):  # which values a key carries
            carried = rules.values_by_group(rule, tables[rule.table], list(worst.index))
            examples[rule.name] = [f"{group}: {carried[group]}" for group in worst.index]
    return pd.concat(values, axis=1) if values else pd.DataFrame(), examples


def _link_expectations(frame: pd.DataFrame, contract: DataContract, gx: Any) -> list[Any]:
    return [
        gx.expectations.ExpectColumnValuesToBeInSet(
            column=link_column(link), value_set=[True], mostly=link.min_coverage
        )
        for link in contract.links
        if link_column(link) in frame
    ]


def _relation_expectations(frame: pd.DataFrame, gx: Any) -> list[Any]:
    return [
        gx.expectations.ExpectColumnValuesToBeInSet(column=name, value_set=[True])
        for name in frame.columns
    ]


def _group_expectations(frame: pd.DataFrame, contract: DataContract, gx: Any) -> list[Any]:
    expectations = []
    for rule in contract.group_rules:
        if rule.name not in frame:
            continue
        groups = int(frame[rule.name].notna().sum())
        # `allowed_failures` groups as GX's `mostly` share, a hair lower so that exactly
        # that many failures passes despite float rounding of the ratio
        mostly = max(1.0 - rule.allowed_failures / groups, 0.0) - 1e-9 if groups else 1.0
        expectations.append(
            gx.expectations.ExpectColumnValuesToBeBetween(
                column=rule.name, min_value=rule.min, max_value=rule.max, mostly=min(mostly, 1.0)
            )
        )
    return expectations


def _limit(kind: str, kwargs: Mapping[str, Any], group_rule: GroupRule | None) -> str | None:
    """The limit an expectation enforces, in words."""
    if kind.endswith("_to_be_in_set") and list(kwargs.get("value_set", [])) == [True]:
        mostly = kwargs.get("mostly") or 1.0
        return "holds in every row" if mostly >= 1 else f"holds in at least {mostly:.2%} of rows"
    if group_rule is not None:
        allowed = group_rule.allowed_failures
        where = f" in all but {allowed} groups" if allowed else " in every group"
        return group_rule.limit + where
    parts = []
    if kwargs.get("min_value") is not None or kwargs.get("max_value") is not None:
        parts.append(f"between {kwargs.get('min_value')} and {kwargs.get('max_value')}")
    if "value_set" in kwargs:
        values = list(kwargs["value_set"])
        parts.append(f"in {values[:8]}{' ...' if len(values) > 8 else ''}")
    if "regex" in kwargs:
        parts.append(f"matching {kwargs['regex']}")
    if "column_set" in kwargs:
        parts.append(f"exactly {sorted(kwargs['column_set'])}")
    if kind.endswith("_to_not_be_null"):
        parts.append("not null")
    if kind.endswith("_to_be_unique"):
        parts.append("unique")
    if "type_list" in kwargs:
        parts.append(f"dtype in {kwargs['type_list']}")
    mostly = kwargs.get("mostly")
    if mostly is not None and mostly < 1:
        parts.append(f"for at least {mostly:.4%} of rows")
    return ", ".join(parts) or None


# -- running -------------------------------------------------------------------------------


def _outcome(
    table: str,
    result: Any,
    examples: int,
    known: Mapping[str, list[str]],
    contract: DataContract,
) -> ExpectationOutcome:
    """One GX result as an outcome; `known` examples (rows or groups) win over GX's values."""
    data = result.to_json_dict()
    config = data["expectation_config"]
    kwargs = config.get("kwargs", {})
    details = data.get("result") or {}
    exception = data.get("exception_info") or {}
    error = exception.get("exception_message") if exception.get("raised_exception") else None
    observed = details.get("observed_value")
    column = kwargs.get("column") or (
        "+".join(kwargs["column_list"]) if "column_list" in kwargs else None
    )
    group_rule = next((r for r in contract.group_rules if r.name == column), None)
    shown = known.get(column or "") if table != LINKS_TABLE else None
    if shown is None:
        shown = [str(v) for v in (details.get("partial_unexpected_list") or [])]
    return ExpectationOutcome(
        table=table,
        column=column,
        expectation=config["type"],
        success=bool(data["success"]),
        unexpected_count=details.get("unexpected_count"),
        unexpected_percent=details.get("unexpected_percent"),
        observed=None if observed is None else str(observed),
        limit=_limit(config["type"], kwargs, group_rule),
        examples=shown[:examples] if not data["success"] else [],
        error=error,
    )


def _gx_context(docs_dir: Path | None) -> Any:
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations as gx  # noqa: PLC0415 - heavy import, only when validating
    from great_expectations.data_context.types.base import ProgressBarsConfig  # noqa: PLC0415

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    if docs_dir is not None:
        context.add_data_docs_site(
            "loopline",
            {
                "class_name": "SiteBuilder",
                "store_backend": {
                    "class_name": "TupleFilesystemStoreBackend",
                    "base_directory": str(docs_dir.resolve()),
                },
                "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
            },
        )
    return gx, context


def validate_tables(
    tables: Mapping[str, pd.DataFrame],
    contract: DataContract,
    min_rows: Mapping[str, int] | None = None,
    docs_dir: Path | None = None,
    examples_per_failure: int = 5,
) -> ValidationReport:
    """Run the contract's expectation suites over `tables`; build Data Docs into `docs_dir`.

    Never raises for bad data: every problem, a missing column included, becomes a failed
    outcome in the report. Call `report.raise_for_failures()` to stop a pipeline.
    """
    gx, context = _gx_context(docs_dir)
    source = context.data_sources.add_pandas("raw")
    batches = {name: tables[name] for name in contract.table_names()}
    batches[LINKS_TABLE] = build_links_frame(tables, contract)
    batches[RELATIONS_TABLE], relation_examples = build_relations_frame(tables, contract)
    batches[GROUPS_TABLE], group_examples = build_groups_frame(tables, contract)
    known = {**relation_examples, **group_examples}
    outcomes: list[ExpectationOutcome] = []
    for name, frame in batches.items():
        if name == LINKS_TABLE:
            expectations = _link_expectations(frame, contract, gx)
        elif name == RELATIONS_TABLE:
            expectations = _relation_expectations(frame, gx)
        elif name == GROUPS_TABLE:
            expectations = _group_expectations(frame, contract, gx)
        else:
            limit = (min_rows or {}).get(name, 1)
            expectations = _table_expectations(contract.table(name), limit, gx)
        if not expectations:
            continue
        suite = context.suites.add(gx.ExpectationSuite(name=name, expectations=expectations))
        batch = source.add_dataframe_asset(name).add_batch_definition_whole_dataframe(name)
        definition = context.validation_definitions.add(
            gx.ValidationDefinition(name=name, data=batch, suite=suite)
        )
        result = definition.run(batch_parameters={"dataframe": frame}, result_format="BASIC")
        outcomes += [
            _outcome(name, r, examples_per_failure, known, contract) for r in result.results
        ]
    if docs_dir is not None:
        context.build_data_docs()
    failed = sum(not o.success for o in outcomes)
    report = ValidationReport(
        success=failed == 0, evaluated=len(outcomes), failed=failed, outcomes=outcomes
    )
    log.info("validation: %d of %d expectations passed", report.evaluated - failed, len(outcomes))
    return report
