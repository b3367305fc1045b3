"""Serving: the champion behind a typed HTTP API, and batch scoring.

`service` is the BentoML service (`bentoml serve loopline.serving.service:PredictionAPI`);
it wires `schema` (the request types, generated from the data contract), `guards` (API
key, body size, JSON only, load shedding), `champion` (the served versions, followed as
the aliases move) and the prediction log. `batch` scores a file with a registered
version. Everything but `service` is testable without a server.
"""
