"""Data-quality incidents in a live batch: outages, vanished categories, repeated records."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from loopline.core.params import TrafficChecks, load_params
from loopline.data.datasets import get_dataset
from loopline.monitoring.drift import MonitoredColumns
from loopline.monitoring.profile import profile_frame
from loopline.monitoring.traffic import KeyReader, Repeats, incidents, key_hashes
from tests.conftest import ROOT

DATASET = get_dataset("nycflights13")
# the project's limits, with the day-size floor scaled to the test slice (1 flight in 25)
CHECKS: TrafficChecks = load_params(ROOT / "params.yaml").monitor.traffic.model_copy(
    update={"min_day_rows": 20}
)


@pytest.fixture(scope="module")
def traffic(small_tables: dict) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(reference, batch): spring flights as training data, two summer weeks as traffic."""
    params = load_params(ROOT / "params.yaml")
    examples = DATASET.build_examples(small_tables, params.dataset)
    when = examples[DATASET.time_column]
    reference = examples[when.dt.month <= 4].reset_index(drop=True)
    batch = examples[(when >= "2013-07-01") & (when < "2013-07-15")].reset_index(drop=True)
    days = batch[DATASET.time_column].dt.strftime("%Y-%m-%d")
    return reference, batch.assign(event_day=days)


def _check(batch: pd.DataFrame, reference: pd.DataFrame) -> list[str]:
    """The incidents found, as the lines people read (from profiles, as the monitor does)."""
    columns = MonitoredColumns.from_contract(DATASET.contract, DATASET.target_column)
    scored = {"probability": 0.3, "label": 0, "model_version": "1"}
    profile = profile_frame(
        batch.assign(**scored), columns.profiled("event_day", DATASET.key_columns)
    )
    keys = KeyReader(DATASET.key_columns, lambda: iter([batch]))
    found = incidents(
        profile, columns.reference_profile(reference.assign(**scored)), DATASET.contract,
        CHECKS, repeats=Repeats.of([key_hashes(batch, DATASET.key_columns)]), keys=keys,
    )  # fmt: skip
    return [str(incident) for incident in found]


def test_real_traffic_has_no_incident(traffic: tuple) -> None:
    reference, batch = traffic
    assert _check(batch, reference) == []


def test_weather_missing_for_a_whole_day_is_a_feed_outage(traffic: tuple) -> None:
    reference, batch = traffic
    broken = batch.copy()
    day = broken["event_day"] == "2013-07-09"
    broken.loc[day, ["temp", "dewp", "humid", "wind_speed", "precip", "visib"]] = np.nan
    found = _check(broken, reference)
    assert len(found) == 1
    assert found[0].startswith("feed outage on 2013-07-09: temp, dewp, humid, wind_speed")
    assert f"of its {int(day.sum())} records" in found[0]


def test_a_carrier_missing_for_the_batch_is_reported(traffic: tuple) -> None:
    reference, batch = traffic
    found = _check(batch[batch["carrier"] != "UA"], reference)
    assert len(found) == 1
    assert found[0].startswith("carrier UA nearly gone: 0.0% of the batch")


def test_a_spike_of_one_repeated_record_is_reported(traffic: tuple) -> None:
    reference, batch = traffic
    spike = pd.concat([batch, batch.iloc[[5]].loc[lambda f: f.index.repeat(60)]])
    found = _check(spike.reset_index(drop=True), reference)
    assert len(found) == 1
    first = batch.iloc[5]
    assert found[0].startswith("repeated records: ")
    assert f"flight={first['flight']}" in found[0]
    assert "(61 times)" in found[0]


def test_records_that_break_a_row_rule_of_the_contract_are_reported(traffic: tuple) -> None:
    """A flight landing where it left: every field in its own range, the row impossible."""
    reference, batch = traffic
    broken = batch.copy()
    rows = broken.index[::50]  # 2% of the batch
    broken.loc[rows, "dest"] = broken.loc[rows, "origin"]
    found = _check(broken, reference)
    assert len(found) == 2  # and "routes" from an airport to itself carry many distances
    assert found[1].startswith("origin dest determines distance in the contract")
    first = broken.loc[rows[0]]
    assert found[0].startswith(
        f"flights: origin differs from dest broken by {len(rows)} of {len(batch)} records "
        f"(limit 0.1%); e.g. year=2013 month=7 day={first['day']} carrier={first['carrier']} "
        f"flight={first['flight']}"
    ), found[0]


def test_keys_carrying_two_values_of_what_they_determine_are_reported(traffic: tuple) -> None:
    """Three routes sent with a second distance for half their flights."""
    reference, batch = traffic
    broken = batch.copy()
    routes = broken.groupby(["origin", "dest"]).size().nlargest(3).index
    for origin, dest in routes:
        rows = broken.index[(broken["origin"] == origin) & (broken["dest"] == dest)]
        broken.loc[rows[::2], "distance"] += 100
    found = _check(broken, reference)
    assert len(found) == 1
    origin, dest = routes[0]
    assert found[0].startswith(
        "origin dest determines distance in the contract, but 3 keys of the batch carry two or "
        "more (at most 2 may); e.g. "
    ), found[0]
    distance = int(
        batch.loc[(batch["origin"] == origin) & (batch["dest"] == dest), "distance"].iloc[0]
    )
    assert f"{origin} {dest}: {distance}, {distance + 100}" in found[0]
