"""The name of every tag Loopline writes on an MLflow run or registered model version.

Tags are how a version carries its lineage (commit, data, params, windows), its test
metrics and the decisions taken on it; they are read back by the registry, the gate,
the monitor and the model card, so each name is spelled here once.
"""

from __future__ import annotations

# lineage, on every train run and registered version
GIT_COMMIT = "loopline.git_commit"
DATA_MD5 = "loopline.data_md5"
PARAMS_HASH = "loopline.params_hash"
FAMILY = "loopline.family"


def window(split: str) -> str:
    """The tag holding a split's window (`train`, `valid`, `test`): "first..last", etc."""
    return f"loopline.{split}_window"


ARRIVALS = "arrivals "  # a test window of labeled arrivals: "arrivals <first>..<last>"

# a train run: the model it logged, and the digest of its compiled scorer
MODEL_URI = "loopline.model_uri"
SCORER_DIGEST = "loopline.scorer_digest"

# a registered version
RUN_ID = "loopline.run_id"
TEST_METRIC = "loopline.test_metric."  # prefix: one tag per test-window metric
DECISION = "loopline.decision"
DECIDED_AT = "loopline.decided_at"
REASON = "loopline.reason"
CHECKS = "loopline.checks"

# the registered model: a running canary (`loopline.registry.canary`), as JSON
CANARY = "loopline.canary"

# a retrain's own run: why it ran, and (tagged by its register stage) what came of it
RETRAIN_REASON = "loopline.retrain.reason"
RETRAIN_DECISION_ID = "loopline.retrain.decision_id"
RETRAIN_DECISION = "loopline.retrain.decision"
RETRAIN_WINDOWS = "loopline.retrain.windows"
RETRAIN_OUTCOME = {
    "version": "loopline.retrain.version",
    "action": "loopline.retrain.outcome",
    "champion": "loopline.retrain.champion",
}
