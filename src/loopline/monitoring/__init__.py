"""Monitoring: production traffic against the champion's training data, and the retrain rule.

`traffic` checks a batch's data quality first (a dead feed is an incident, not drift);
`drift` runs the Evidently report; `measure` turns a batch into a `BatchOutcome`;
`records` holds the typed outcomes and decisions; `rule` decides whether the recent
batches justify a retrain; `dashboard` sets up the Evidently project; `run` is one
monitoring step end to end, which the Prefect flow `pipelines/monitor.py` wires.
"""
