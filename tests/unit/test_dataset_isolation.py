"""Nothing outside `loopline.data.datasets` names a column of a dataset: the shared code gets
every name (fields, target, time, keys) from the dataset module."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from loopline.data.datasets import get_dataset

ROOT = Path(__file__).parents[2]
SHARED_CODE = ("src/loopline", "pipelines", "serving")  # all the code a dataset plugs into
DATASETS = ("nycflights13", "wa_churn")
# Columns of flights' reference tables (airlines.name, airports.name, planes.model,
# planes.type) that are everyday words of JSON, ASGI and MLflow code too; every other
# column name is checked.
EVERYDAY_WORDS = {"name", "model", "type"}


def column_names(dataset_name: str) -> set[str]:
    """Every column of the dataset's tables, plus the target and time columns it adds."""
    dataset = get_dataset(dataset_name)
    names = {column for table in dataset.contract.tables for column in table.column_names()}
    return names | {c for c in (dataset.target_column, dataset.time_column) if c}


def shared_modules() -> list[Path]:
    files = [path for base in SHARED_CODE for path in sorted((ROOT / base).rglob("*.py"))]
    return [path for path in files if "datasets" not in path.relative_to(ROOT).parts]


def named_columns(source: str, columns: set[str]) -> list[tuple[int, str]]:
    """(line, name) of each string literal that is exactly a column name.

    Literals inside `Literal[...]` are type vocabulary (the contract's date parts and
    periods), not references to a column.
    """
    tree = ast.parse(source)
    in_literal_types = {
        id(inner)
        for node in ast.walk(tree)
        if isinstance(node, ast.Subscript)
        and isinstance(node.value, ast.Name)
        and node.value.id == "Literal"
        for inner in ast.walk(node.slice)
    }
    return [
        (node.lineno, node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and node.value in columns
        and id(node) not in in_literal_types
    ]


@pytest.mark.parametrize("dataset_name", DATASETS)
def test_no_shared_module_names_a_column_of_the_dataset(dataset_name: str) -> None:
    columns = column_names(dataset_name) - EVERYDAY_WORDS
    assert len(shared_modules()) > 40  # the scan reads the real tree
    found = [
        f"{path.relative_to(ROOT)}:{line} names {name!r}"
        for path in shared_modules()
        for line, name in named_columns(path.read_text(), columns)
    ]
    assert not found, "\n".join(found)


def test_the_scan_sees_a_column_named_in_code() -> None:
    """The scan itself: a subscript, a keyword default and a tuple all count."""
    source = 'x = frame["carrier"]\ndef f(target="churned"): ...\nkeys = ("tenure", "z")\n'
    columns = column_names("nycflights13") | column_names("wa_churn")
    assert named_columns(source, columns) == [(1, "carrier"), (2, "churned"), (3, "tenure")]
    assert named_columns('Period = Literal["day", "month"]\n', columns) == []
