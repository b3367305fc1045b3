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
    profile = profile_frame(batch.assign(**scored), columns.profiled("event_day"))
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
