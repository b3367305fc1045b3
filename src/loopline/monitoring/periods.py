"""Drift over any period, merged from the batches' stored profiles (no row read again).

"This week", "this month" or "since the champion was promoted" is the merge of the
profiles stored with the batches of that period (`MonitorState.profiles`), tested
against the reference of the version that served most of it, with the same tests as a
batch (`loopline.monitoring.drift`): the limits follow the merged size, so a month is
held to a month's noise, not a week's.
"""

from __future__ import annotations

from dataclasses import dataclass

from loopline.core.errors import LooplineError
from loopline.monitoring.drift import DriftResult, MonitoredColumns, drift_tests
from loopline.monitoring.measure import reference_frame
from loopline.monitoring.profile import Profile, merge_all
from loopline.workspace import Workspace


@dataclass(frozen=True)
class PeriodDrift:
    """A period's merged profile and its drift tests."""

    batches: int
    profile: Profile
    version: str  # the reference's version: the one that served most of the period
    drift: DriftResult


def period_drift(
    workspace: Workspace,
    after: str | None = None,
    until: str | None = None,
    version: str | None = None,
) -> PeriodDrift:
    """Drift of the batches ending after `after` up to `until` (ISO), served by `version`.

    None leaves a bound open. Raises LooplineError when no stored batch falls in it.
    """
    stored = workspace.monitor_state.profiles(after, until, version)
    if not stored:
        served = f" served by version {version}" if version else ""
        raise LooplineError(
            f"no measured batch{served} ends in ({after or 'the start'}, {until or 'now'}]: "
            "run the monitor first (loopline monitor)"
        )
    profile = merge_all(Profile.from_dict(one) for one in stored)
    dataset, params = workspace.dataset, workspace.params
    columns = MonitoredColumns.from_contract(dataset.contract, dataset.target_column)
    served_most = profile.main_version()
    reference = columns.reference_profile(reference_frame(workspace, served_most))
    drift = drift_tests(reference, profile, columns, params.monitor.drift, params.seed)
    return PeriodDrift(len(stored), profile, served_most, drift)
