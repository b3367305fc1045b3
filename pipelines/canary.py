"""canary flow: one look at the running canary, and the decision it leads to.

Runs on the canary deployment's schedule (every `monitor.interval_minutes`), from
`loopline canary`, or from the replay after each batch's labels. Each look is one flow
run named by the canary's version and step (`canary-v8-step2`), so the Prefect UI lists a
canary's life look by look. It judges the registry's running canary on the prediction
log (`loopline.promotion.canary`) and applies the decision under the registry lock: hold,
the next step, promote, or roll back. The ledger keeps every look with its evidence, and
the drift dashboard gets the look's panels.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.runtime import flow_run

from loopline.infra.prefect import run_stage
from loopline.monitoring.experiment import show_look
from loopline.promotion.canary import look
from loopline.registry.versions import ChampionMovedError
from loopline.workspace import Workspace


def _run_name() -> str:
    """`canary-v<version>-step<n>` (steps counted from 1), or `canary-none`."""
    params_path = flow_run.parameters.get("params_path", Path("params.yaml"))
    running = Workspace.load(Path(params_path)).registry.canary()
    return f"canary-v{running.version}-step{running.step + 1}" if running else "canary-none"


@flow(name="canary", flow_run_name=_run_name)
def canary(params_path: Path = Path("params.yaml")) -> dict[str, Any]:
    """Judge the running canary once and apply the decision."""
    workspace = Workspace.load(params_path)
    registry = workspace.registry
    running = registry.canary()
    if running is None:
        return {"judged": False, "reason": "no canary is running"}
    judged = look(
        workspace.prediction_log, running, workspace.params.canary, workspace.dataset.key_columns
    )
    try:
        entry = registry.decide_canary(
            running, judged.action, judged.reason, judged.evidence, judged.share
        )
    except ChampionMovedError as moved:  # someone moved the champion it was compared with
        entry = registry.decide_canary(
            running, "rollback", f"{moved}: the canary was judged against another champion",
            judged.evidence,
        )  # fmt: skip
    show_look(workspace, running, entry)
    get_run_logger().info("canary v%s step %d: %s (%s)", running.version, running.step + 1,
                          entry["action"], entry["reason"])  # fmt: skip
    return {
        "judged": True, "version": running.version, "step": running.step,
        "share": running.share, "action": entry["action"], "reason": entry["reason"],
        "champion": entry["champion"], "evidence": judged.evidence,
    }  # fmt: skip


def main() -> None:
    """`python -m pipelines.canary --params P`: one look now, and what it decided."""
    parser = argparse.ArgumentParser(description="Judge the running canary once, now.")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    args = parser.parse_args()

    def judge_and_say() -> None:
        result = canary(args.params)
        if not result["judged"]:
            print(result["reason"])  # noqa: T201 - the command's answer
            return
        print(f"canary v{result['version']} step {result['step'] + 1}: {result['action']}")  # noqa: T201
        print(result["reason"])  # noqa: T201

    run_stage(judge_and_say)


if __name__ == "__main__":
    main()
