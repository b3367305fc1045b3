"""validate stage: the Great Expectations suite over the raw tables.

Writes the report (JSON), Data Docs (HTML) and a small metrics file, then fails the run
with a message naming each failed table, column and expectation.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow, task

from loopline.config import Params, load_params
from loopline.datasets import get_dataset
from loopline.datasets.base import read_tables
from loopline.io import atomic_dir, write_json
from loopline.orchestration import run_stage
from loopline.validation import ValidationReport, validate_tables


@task
def check_tables(params: Params, docs_dir: Path) -> ValidationReport:
    """Run the contract's suites over the raw tables, building Data Docs in `docs_dir`."""
    dataset = get_dataset(params.dataset.name)
    tables = read_tables(params.paths.data, dataset.contract)
    return validate_tables(
        tables,
        dataset.contract,
        min_rows=params.validate_.min_rows,
        docs_dir=docs_dir,
        examples_per_failure=params.validate_.examples_per_failure,
    )


@task
def write_report(report: ValidationReport, params: Params) -> None:
    """Store the full report and the headline numbers DVC tracks as metrics."""
    write_json(report.model_dump(), params.paths.validation / "report.json")
    metrics = {"expectations": report.evaluated, "failed": report.failed}
    write_json(metrics, params.paths.metrics / "validate.json")


@flow(name="validate")
def validate(params_path: Path = Path("params.yaml")) -> None:
    """Validate the raw tables against the data contract; fail on any failed expectation."""
    params = load_params(params_path)
    with atomic_dir(params.paths.validation / "data_docs") as docs_dir:
        report = check_tables(params, docs_dir)
    write_report(report, params)
    report.raise_for_failures()


if __name__ == "__main__":
    run_stage(validate)
