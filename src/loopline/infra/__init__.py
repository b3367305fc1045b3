"""Infrastructure: stores, processes and the tools the loop runs on, with no ML in them.

`processes` starts, health-checks and stops every long-running server from one builder
each; `environment` keeps the tools quiet and offline; `prefect` and `dvc` run flows and
stages; `tracking` points MLflow at a store; `database` and `postgres` are the SQLite or
PostgreSQL layer under `prediction_log` (every prediction, group-committed),
`monitor_state` (batches and decisions) and `ledger` (promotion decisions).
"""
