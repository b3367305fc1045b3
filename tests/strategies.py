"""Hypothesis strategies generated from the data contract (no hand-written column list)."""

from __future__ import annotations

import pandas as pd
from hypothesis import strategies as st

from loopline.data.contract import DataContract, Field_


def field_values(field: Field_) -> st.SearchStrategy:
    """Values that satisfy one contract field (None included where nullable)."""
    if field.clock:  # HHMM: any hour in range, minutes 00-59
        low, high = int(field.min or 0), int(field.max if field.max is not None else 2359)
        values: st.SearchStrategy = st.builds(
            lambda hour, minute: hour * 100 + minute, st.integers(0, 24), st.integers(0, 59)
        ).filter(lambda hhmm: low <= hhmm <= high)
    elif field.dtype == "int":
        values = st.integers(int(field.min or 0), int(field.max or 10**6))
    elif field.dtype == "float":
        values = st.floats(field.min, field.max, allow_nan=False, allow_infinity=False)
    elif field.allowed:
        values = st.sampled_from(field.allowed)
    else:
        values = st.from_regex(f"^{field.pattern or '[A-Za-z0-9 ]{1,12}'}$", fullmatch=True)
    return st.one_of(st.none(), values) if field.nullable else values


def records(contract: DataContract, min_size: int = 1, max_size: int = 30) -> st.SearchStrategy:
    """DataFrames of prediction records whose every value is allowed by the contract."""
    fields = contract.record_fields()
    row = st.fixed_dictionaries({f.name: field_values(f) for f in fields})
    return st.lists(row, min_size=min_size, max_size=max_size).map(
        lambda rows: pd.DataFrame(rows, columns=[f.name for f in fields])
    )
