"""Benchmark: the monitor's findings on every week of a replayed log (to compare two monitors).

After `make replay`, the prediction log holds July-December 2013 as the service answered
it, with the labels. This measures each week of it again, as the monitor flow does, and
prints one JSON line a week: rows, the version that served most of it, the drifted
fields, the flags (`BatchOutcome.reasons`), the incidents and each field's drift score.
The monitor's outputs go to a scratch folder: the replay's own state and dashboard are
not touched, and no decision is made (decisions depend on the weeks before; the flags do
not). Running the same log through an older monitor gives the comparison:

    .venv/bin/python -m bench.monitor_weeks > new.jsonl
    git worktree add /tmp/old <commit>
    PYTHONPATH=/tmp/old/src .venv/bin/python -m bench.monitor_weeks \\
        --params /tmp/old/params.yaml --root . > old.jsonl

(`--params` is the params file of the code that runs, `--root` the project whose log and
registry are read.) It uses only what both monitors have: `measure_batch`, the time
axis's `batch` and the outcome's fields.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import tempfile
from pathlib import Path

import yaml

from loopline.monitoring.measure import measure_batch
from loopline.workspace import Workspace

ROOT = Path(__file__).resolve().parents[1]
WEEK = dt.timedelta(days=7)


def weeks(first: dt.date, last: dt.date) -> list[tuple[dt.date, dt.date]]:
    """`first`..`last` cut into weeks from `first` (the last one may be shorter)."""
    cuts = []
    while first <= last:
        cuts.append((first, min(first + WEEK - dt.timedelta(days=1), last)))
        first += WEEK
    return cuts


def main() -> None:
    """Print one JSON line per week of the replayed half year."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=ROOT / "params.yaml")
    parser.add_argument("--root", type=Path, default=ROOT, help="the project read")
    parser.add_argument("--first", type=dt.date.fromisoformat, default=dt.date(2013, 7, 1))
    parser.add_argument("--last", type=dt.date.fromisoformat, default=dt.date(2013, 12, 31))
    args = parser.parse_args()
    raw = yaml.safe_load(args.params.read_text())
    with tempfile.TemporaryDirectory() as scratch:
        for key in ("workspace", "reports", "state"):
            raw["monitor"][key] = str(Path(scratch) / Path(raw["monitor"][key]).name)
        # relative paths in a params file are the project's: the copy lives in its root
        with tempfile.NamedTemporaryFile("w", suffix=".yaml", dir=args.root.resolve()) as file:
            yaml.safe_dump(raw, file, sort_keys=False)
            file.flush()
            workspace = Workspace.load(Path(file.name))
            for first, last in weeks(args.first, args.last):
                batch = workspace.axis.batch(
                    workspace.prediction_log, workspace.monitor_state, first, last
                )
                outcome = measure_batch(workspace, batch).outcome
                print(json.dumps({
                    "first_day": first.isoformat(), "last_day": last.isoformat(),
                    "rows": outcome.rows, "version": outcome.model_version,
                    "drifted": outcome.drifted_columns,
                    "reasons": outcome.reasons(workspace.params.monitor),
                    "incidents": [str(incident) for incident in outcome.incidents],
                    # the literal, not records.DRIFT_PREFIX: the older monitor has none
                    "drift": {name: value for name, value in outcome.metrics.items()
                              if name.startswith("drift_")},
                }), flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
