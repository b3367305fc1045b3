"""The data: what a table must look like, where it comes from, and how time runs through it.

`contract` declares every column (type, role, range, nulls, links); `datasets` holds one
module per dataset; `validation` builds the Great Expectations suite from the contract
and `rules` checks what spans columns, rows or periods; `datastore` fetches exactly the
bytes data.dvc pins; `splits` cuts train, valid and test; `time_axis` is the one place
that knows whether a dataset has a time column (`ByDays`) or not (`ByArrival`).
"""
