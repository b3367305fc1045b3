"""validate stage: the Great Expectations suite over the raw tables.

A passing run replaces the report (JSON), the Data Docs (HTML) and the metrics file, and
removes any earlier failure report. A failing run leaves all of those as the last good
run wrote them: its own report and Data Docs go to `<paths.validation>/failed/`, and the
stage stops with one message naming each failed table or rule, its limit, what was found
and example rows or groups. So after fixing the data, `dvc repro` starts from the last
good state. (dvc.yaml marks these outputs `persist`, so DVC does not delete them before
the stage runs either.)
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pandas as pd
from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from loopline.core.io import swap_dir, write_json
from loopline.core.params import Params
from loopline.data.contract import DataContract
from loopline.data.validation import ValidationReport, validate_tables
from loopline.infra.prefect import expected_failures, run_stage
from loopline.workspace import Workspace

FAILED_DIR = "failed"


@task(cache_policy=NO_CACHE)  # its inputs are whole tables: nothing to gain from hashing them
def check_tables(
    tables: dict[str, pd.DataFrame], contract: DataContract, params: Params, docs_dir: Path
) -> ValidationReport:
    """Run the contract's suites over the raw tables, building Data Docs in `docs_dir`."""
    return validate_tables(
        tables,
        contract,
        min_rows=params.validate_.min_rows,
        docs_dir=docs_dir,
        examples_per_failure=params.validate_.examples_per_failure,
    )


@task
def publish(report: ValidationReport, run_dir: Path, params: Params) -> None:
    """Put this run's report and Data Docs in place: the good outputs, or `failed/`."""
    out = params.paths.validation
    write_json(report.model_dump(), run_dir / "report.json")
    if not report.success:
        swap_dir(run_dir, out / FAILED_DIR)
        return
    swap_dir(run_dir / "data_docs", out / "data_docs")
    (run_dir / "report.json").replace(out / "report.json")
    metrics = {"expectations": report.evaluated, "failed": report.failed}
    write_json(metrics, params.paths.metrics / "validate.json")
    shutil.rmtree(out / FAILED_DIR, ignore_errors=True)


@flow(name="validate")
@expected_failures
def validate(params_path: Path | None = None) -> None:
    """Validate the raw tables against the data contract; fail on any failed expectation."""
    workspace = Workspace.load(params_path)
    out = workspace.params.paths.validation
    out.mkdir(parents=True, exist_ok=True)
    run_dir = Path(tempfile.mkdtemp(prefix=".run-", dir=out))
    try:
        tables = workspace.tables()  # an unreadable table stops here
        contract = workspace.dataset.contract
        report = check_tables(tables, contract, workspace.params, run_dir / "data_docs")
        publish(report, run_dir, workspace.params)
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
    report.raise_for_failures()


if __name__ == "__main__":
    run_stage(validate)
