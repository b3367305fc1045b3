"""The loop: what closes it once a model is served.

`retraining` plans a retrain from the newest labels (through the time axis) and runs the
pipeline again under that plan without touching the checkout; `replay` plays data no
model has seen through the live service, the monitor and any retrains it triggers, and
`report` writes what happened. The Prefect flows of `pipelines/` run these.
"""
