"""Monitoring support: drift and quality of production batches, and the retrain decision.

`job.measure_batch` turns one batch of logged predictions (and labels, once delivered)
into numbers, an Evidently snapshot on the dashboard and an HTML report; `decision.decide`
says whether the last batches justify a retrain. The Prefect flow in
`pipelines/monitor.py` wires them and fires the retrain event.
"""
