"""Great Expectations validation of the raw tables, generated from the data contract.

Each contract table becomes one expectation suite (columns, types, nulls, ranges, allowed
values, patterns, key uniqueness, row count); the contract's links become a suite over a
derived `links` frame holding, per flight, whether each referenced key was found. The
outcome is a compact `ValidationReport` (JSON) plus GX Data Docs (HTML).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd
from pydantic import BaseModel

from loopline.contract import DataContract, Field_, Link, Table, pandas_dtypes
from loopline.errors import DataValidationError

log = logging.getLogger(__name__)

LINKS_TABLE = "links"


class ExpectationOutcome(BaseModel):
    """The result of one expectation, reduced to what a person needs to act on it."""

    table: str
    column: str | None
    expectation: str
    success: bool
    unexpected_count: int | None = None
    unexpected_percent: float | None = None
    observed: str | None = None
    examples: list[str] = []
    error: str | None = None

    def describe(self) -> str:
        """One line naming table, column, expectation and what was found."""
        where = f"{self.table}.{self.column}" if self.column else self.table
        if self.error:
            found = f"error: {self.error}"
        elif self.unexpected_count is not None:
            found = f"{self.unexpected_count} unexpected ({self.unexpected_percent or 0:.3f}%)"
            if self.examples:
                found += f", e.g. {', '.join(self.examples)}"
        else:
            found = f"observed {self.observed}"
        return f"{where}: {self.expectation} failed: {found}"


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
        source, target = tables[link.source], tables[link.target]
        if not set(link.columns) <= set(source) or not set(link.target_columns) <= set(target):
            continue
        keys = pd.MultiIndex.from_frame(source[list(link.columns)])
        known = pd.MultiIndex.from_frame(target[list(link.target_columns)])
        found = pd.Series(keys.isin(known), index=source.index, dtype="object")
        columns[link_column(link)] = found.where(source[list(link.columns)].notna().all(axis=1))
    return pd.DataFrame(columns)


def _link_expectations(frame: pd.DataFrame, contract: DataContract, gx: Any) -> list[Any]:
    return [
        gx.expectations.ExpectColumnValuesToBeInSet(
            column=link_column(link), value_set=[True], mostly=link.min_coverage
        )
        for link in contract.links
        if link_column(link) in frame
    ]


# -- running -------------------------------------------------------------------------------


def _outcome(table: str, result: Any, examples: int) -> ExpectationOutcome:
    data = result.to_json_dict()
    config = data["expectation_config"]
    kwargs = config.get("kwargs", {})
    details = data.get("result") or {}
    exception = data.get("exception_info") or {}
    error = exception.get("exception_message") if exception.get("raised_exception") else None
    observed = details.get("observed_value")
    return ExpectationOutcome(
        table=table,
        column=kwargs.get("column")
        or ("+".join(kwargs["column_list"]) if "column_list" in kwargs else None),
        expectation=config["type"],
        success=bool(data["success"]),
        unexpected_count=details.get("unexpected_count"),
        unexpected_percent=details.get("unexpected_percent"),
        observed=None if observed is None else str(observed),
        examples=[str(v) for v in (details.get("partial_unexpected_list") or [])[:examples]],
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
    outcomes: list[ExpectationOutcome] = []
    for name, frame in batches.items():
        if name == LINKS_TABLE:
            expectations = _link_expectations(frame, contract, gx)
        else:
            limit = (min_rows or {}).get(name, 1)
            expectations = _table_expectations(contract.table(name), limit, gx)
        suite = context.suites.add(gx.ExpectationSuite(name=name, expectations=expectations))
        batch = source.add_dataframe_asset(name).add_batch_definition_whole_dataframe(name)
        definition = context.validation_definitions.add(
            gx.ValidationDefinition(name=name, data=batch, suite=suite)
        )
        result = definition.run(batch_parameters={"dataframe": frame}, result_format="SUMMARY")
        outcomes += [_outcome(name, r, examples_per_failure) for r in result.results]
    if docs_dir is not None:
        context.build_data_docs()
    failed = sum(not o.success for o in outcomes)
    report = ValidationReport(
        success=failed == 0, evaluated=len(outcomes), failed=failed, outcomes=outcomes
    )
    log.info("validation: %s", report.summary())
    return report
