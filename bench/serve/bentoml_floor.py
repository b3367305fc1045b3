"""The BentoML floor the serving bench measures: a service that does no work at all.

Same framework settings as the Loopline service (workers, Prometheus metrics on, access
log off, no OpenTelemetry spans, as with `serve.tracing: false`), one route that counts
the records it was sent. Whatever Loopline adds above this is our own cost; what this
costs is BentoML's. Run: bentoml serve bench.serve.bentoml_floor:Floor
"""

from __future__ import annotations

from typing import Any

import bentoml

from bench.serve.run import WORKERS


@bentoml.service(
    name="bentoml-floor",
    workers=WORKERS,
    metrics={"enabled": True},
    logging={"access": {"enabled": False}},
    tracing={"excluded_urls": [".*"]},
)
class Floor:
    """Answers every request without looking at it."""

    @bentoml.api(route="/predict")
    async def predict(self, records: list[dict[str, Any]]) -> dict[str, Any]:
        """The number of records received."""
        return {"records": len(records)}
