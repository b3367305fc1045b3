"""The replay: unseen data played through the live service and the loop, then reported.

`python -m pipelines.replay --params P --url SERVICE --api-url PREFECT [options]` is what
`loopline replay` runs once the service, the Prefect server and the deployments are up.
It wires `loopline.loop.replay.Replay` to the monitor and canary flows, and writes the report to
`paths.replay`, also when it is interrupted (Ctrl-C, SIGTERM): then for the batches played.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import signal
import sys
from pathlib import Path

from prefect.settings import PREFECT_API_URL, temporary_settings

from loopline.core.errors import LooplineError
from loopline.data.time_axis import ReplayOptions
from loopline.infra.environment import configure_logging, quiet_environment
from loopline.infra.processes import Interrupted, stopped_by_signals
from loopline.loop.replay import Replay
from loopline.loop.report import write_report
from loopline.workspace import Workspace
from pipelines.canary import canary
from pipelines.monitor import monitor


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Play unseen data through the live loop.")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--url", required=True, help="the prediction service")
    parser.add_argument("--api-url", required=True, help="the Prefect API")
    parser.add_argument("--start", type=dt.date.fromisoformat)
    parser.add_argument("--end", type=dt.date.fromisoformat)
    parser.add_argument("--step")
    parser.add_argument("--arrive-by")
    parser.add_argument("--descending", action="store_true")
    return parser.parse_args()


def main() -> None:
    """Play, report, and exit 0 (done), 1 (an error) or 128 + the signal (interrupted)."""
    args = _arguments()
    quiet_environment()
    configure_logging()
    workspace = Workspace.load(args.params)
    options = ReplayOptions(args.start, args.end, args.step, args.arrive_by, args.descending)
    api_key = os.environ.get(workspace.params.serve.api_key_env, "")
    replay = Replay(workspace, args.url, args.api_url, monitor, api_key=api_key, canary=canary)
    out = workspace.params.paths.replay
    try:
        with stopped_by_signals(), temporary_settings(updates={PREFECT_API_URL: args.api_url}):
            write_report(replay.play(options), out)
    except KeyboardInterrupt as stop:
        signum = stop.signum if isinstance(stop, Interrupted) else signal.SIGINT
        write_report(replay.story(interrupted=signal.Signals(signum).name), out)
        sys.exit(128 + signum)
    except LooplineError as error:
        print(f"error: {error}", file=sys.stderr)  # noqa: T201 - the command's answer
        sys.exit(1)


if __name__ == "__main__":
    main()
