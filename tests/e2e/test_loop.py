"""The closed loop, end to end on a slice, under the project's own promotion rule: traffic
drift in the replayed weeks makes the monitor ask for a retrain; the Prefect automation
starts the retrain deployment; the retrain, judged on days neither model has seen, beats
the champion; the running service serves it.

Each profile plays one way to release it. Team (`canary.release: direct`): the retrain is
promoted at once; then two triggers at once: the deployment runs one retrain at a time.
Embedded (the default, `canary`): the retrain enters a canary that answers a share of
the traffic, the canary flow looks after each batch's labels, steps it up and promotes it
on live evidence; then an injected failing challenger's canary is rolled back by a
guardrail after one batch. Either way the user's checkout stays untouched.

Then the pages a person reads, in a browser: the team servers' UIs, the service's API
page and the replay's report (at the end of this module)."""

from __future__ import annotations

import calendar
import contextlib
import datetime as dt
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import mlflow
import pandas as pd
import pytest
from playwright.sync_api import Locator, Page, expect
from prefect.client.orchestration import get_client
from prefect.deployments import run_deployment
from prefect.events.worker import EventsWorker
from prefect.logging.handlers import APILogWorker
from prefect.settings import PREFECT_API_URL, temporary_settings

from loopline.cli.servers import team_servers
from loopline.core.params import Params, load_params
from loopline.data.time_axis import ReplayOptions
from loopline.infra import processes
from loopline.infra.processes import Processes, free_port
from loopline.loop.replay import Replay, post_records, wait_for_canary
from loopline.loop.report import write_report
from loopline.registry.versions import CHALLENGER, CHAMPION
from loopline.workspace import Workspace
from pipelines.canary import canary
from pipelines.monitor import monitor
from tests.builders import log_failing_copy
from tests.conftest import fast_params_dict, make_project, run_in_project, tool_env

# The first test of each profile sets up a project, runs dvc repro, replays four weeks and
# waits for three retrains: 6 to 9 minutes on 2 cores, close to the suite's 900 s per test.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]
MELTDOWN = (dt.date(2013, 5, 15), dt.date(2013, 7, 14))  # one carrier's arrivals collapse
CANARY_MELTDOWN_END = dt.date(2013, 8, 11)  # ... longer, so live traffic shows it too
RELEASE = {"embedded": "canary", "team": "direct"}
# A canary's settings for a slice of ~530 flights a fortnight (the defaults fit ~6,500 a week)
CANARY = {"steps": [0.2, 0.5], "min_pairs": 100, "planned_pairs": 500, "min_step_records": 20}
MELTDOWN_CARRIER, MELTDOWN_MINUTES = "EV", 120
LOOP_FAMILIES = ["logistic", "xgboost"]
DRIFT_FROM = dt.date(2013, 7, 1)
DRIFT_UNTIL = dt.date(2013, 9, 1)  # past the replayed weeks; not into late December, where
# the weather table (it ends 2013-12-30) has no evening hours for moved flights to find


def _with_drift_from_july(tables: dict) -> dict:
    """From July, the schedule changes: every departure moves to late evening.

    The change is a consistent one, as a real schedule change would be (the data gate
    checks that the columns agree): the scheduled hour and `time_hour` move with the
    departure, and each flight keeps its delay, so its actual departure moves too. Routes
    keep their distances (the gate holds a route to one distance).
    """
    flights = tables["flights"].copy()
    dates = pd.to_datetime(flights[["year", "month", "day"]])
    later = (dates.dt.date >= DRIFT_FROM) & (dates.dt.date < DRIFT_UNTIL)
    flights.loc[later, "sched_dep_time"] = 2250
    flights.loc[later, "hour"], flights.loc[later, "minute"] = 22, 50
    local_hour = (dates[later] + pd.Timedelta(hours=22)).dt.tz_localize("America/New_York")
    flights.loc[later, "time_hour"] = local_hour.dt.tz_convert("UTC").dt.tz_localize(None)
    departed = (22 * 60 + 50 + flights.loc[later, "dep_delay"]) % 1440  # minutes after 00:00
    clock = (departed // 60) * 100 + departed % 60
    flights.loc[later, "dep_time"] = clock.where(clock != 0, 2400)  # the source's midnight
    return {**tables, "flights": flights}


def _with_an_arrival_meltdown(tables: dict, until: dt.date = MELTDOWN[1]) -> dict:
    """From mid-May to mid-July (or `until`), one carrier's flights all arrive two hours later.

    A change in what makes a flight late (concept drift) that the first champion, trained
    on January to April, cannot know, and that a retrain on the newest labels can learn:
    a fresh model that truly beats it. After the meltdown ends, a retrain that learned
    it is stale from the start: a retrain that does not beat its champion. Arrival time
    moves with the delay, as the data gate checks.
    """
    flights = tables["flights"].copy()
    dates = pd.to_datetime(flights[["year", "month", "day"]]).dt.date
    hit = (
        (flights["carrier"] == MELTDOWN_CARRIER)
        & (dates >= MELTDOWN[0]) & (dates <= until) & flights["arr_delay"].notna()
    )  # fmt: skip
    flights.loc[hit, "arr_delay"] += MELTDOWN_MINUTES
    arrived = flights.loc[hit, "arr_time"]
    minutes = ((arrived // 100) * 60 + arrived % 100 + MELTDOWN_MINUTES) % 1440
    clock = (minutes // 60) * 100 + minutes % 60
    flights.loc[hit, "arr_time"] = clock.where(clock != 0, 2400)
    return {**tables, "flights": flights}


@dataclass(frozen=True)
class Setup:
    """A test project and where its loop runs: its own files, or the team servers."""

    project: Path
    params_file: Path  # params.yaml, or the team file pointed at the servers
    api_url: str
    work_pool: str | None  # team mode: retrains run on the pool's worker
    release: str  # canary.release: canary or direct

    def configure_mlflow(self) -> None:
        Workspace.load(self.params_file).configure_tracking()


@pytest.fixture(scope="module", params=["embedded", "team"])
def setup(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, small_tables: dict
) -> Iterator[Setup]:
    """The project after `dvc repro` and a commit, in either profile. Team: PostgreSQL
    from the wheel, MLflow and Prefect servers on it, a worker, the Evidently service."""
    raw = fast_params_dict()  # the registry section is the project's own rule, unchanged
    raw["monitor"].update({"k": 1, "n": 1, "cooldown_days": 30, "min_batch_rows": 50})
    # The loop is about the monitor, the automation and the gate, not the families (every
    # family is trained in test_dvc_repro): two of them keep the ten pipeline runs short.
    raw["evaluate"]["candidates"] = LOOP_FAMILIES
    raw["serve"].update({"poll_seconds": 1})
    raw["team"]["ports"] = dict.fromkeys(raw["team"]["ports"], 0)  # free ports
    release = RELEASE[request.param]
    raw["canary"]["release"] = release
    raw["canary"].update(CANARY)
    raw["canary"]["guardrails"]["min_requests"] = 3  # a fortnight is ~6 requests of 100
    until = CANARY_MELTDOWN_END if release == "canary" else MELTDOWN[1]
    project = make_project(
        tmp_path_factory.mktemp(f"loop-{request.param}"),
        _with_an_arrival_meltdown(_with_drift_from_july(small_tables), until),
        raw,
    )
    with contextlib.ExitStack() as stack:
        if request.param == "team":
            servers = stack.enter_context(team_servers(project / "params.yaml"))
            found = Setup(
                project,
                servers.params_file,
                servers.prefect_api,
                raw["team"]["work_pool"],
                release,
            )
        else:
            api_url = request.getfixturevalue("prefect_api")
            found = Setup(project, project / "params.yaml", api_url, None, release)
        run_in_project(project, found.api_url, sys.executable, "-m", "dvc", "repro",
                       LOOPLINE_PARAMS=str(found.params_file))  # fmt: skip
        run_in_project(project, found.api_url, "git", "add", "-A")  # the user commits the result
        run_in_project(project, found.api_url, "git", "commit", "-q", "-m", "pipeline run")
        yield found


@pytest.fixture(scope="module")
def project(setup: Setup) -> Path:
    return setup.project


@pytest.fixture(scope="module")
def loop(setup: Setup, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The replayed weeks with the service and the deployments up, then the profile's own
    epilogue (see the module docstring)."""
    tmp = tmp_path_factory.mktemp("loop-run")
    params_file, api_url = setup.params_file, setup.api_url
    try:
        with temporary_settings(updates={PREFECT_API_URL: api_url}), Processes() as running:
            url = running.start(processes.bentoml_service(
                params_file, "127.0.0.1", free_port(), tmp / "service.log",
                BENTOML_HOME=str(tmp / "bento"),
            ))  # fmt: skip
            if setup.work_pool is None:  # team mode: the pool's workers run the deployments
                running.start(
                    processes.deployment_runner(params_file, api_url, tmp / "deployments.log")
                )
            workspace = Workspace.load(params_file)
            if setup.release == "canary":
                replay = Replay(workspace, url, api_url, monitor, canary=canary)
                story = replay.play(ReplayOptions(DRIFT_FROM, dt.date(2013, 8, 11), step="14d"))
                return {"story": story, "failing": _a_failing_canary(workspace, url, tmp),
                        "tmp": tmp}  # fmt: skip
            replay = Replay(workspace, url, api_url, monitor)
            story = replay.play(ReplayOptions(DRIFT_FROM, dt.date(2013, 7, 28), step="14d"))
            runs = [
                run_deployment(
                    "retrain/loopline-retrain",
                    timeout=0,
                    parameters={
                        "labeled_until": "2013-07-28",
                        "reason": reason,
                        "params_path": str(params_file),
                    },
                )
                for reason in ("schedule", "manual")
            ]
            finished = [_wait_until_final(run.id) for run in runs]
    finally:
        # Prefect's event and log workers are one per process, bound to the API they first
        # sent to: flush them to this profile's server (it is still up) and let the next
        # profile start new ones, else its monitor's retrain event goes to this server and
        # never fires. Also after a failure, so that it stays this profile's own.
        EventsWorker.drain_all(timeout=30)
        APILogWorker.drain_all(timeout=30)
    return {"story": story, "triggered_at_once": finished, "tmp": tmp}


def _a_failing_canary(workspace: Workspace, url: str, tmp: Path) -> dict:
    """A copy of the champion that fails to score enters a canary at 50%; one fortnight of
    traffic (Aug 12-25, no labels yet), then one look."""
    registry = workspace.registry
    champion = registry.alias_version(CHAMPION)
    examples = workspace.examples()
    days = pd.to_datetime(examples[workspace.dataset.time_column]).dt.date
    batch = examples[(days >= dt.date(2013, 8, 12)) & (days <= dt.date(2013, 8, 25))]
    source = registry.client.get_model_version(registry.name, champion).source
    failing = registry.register(
        *log_failing_copy(source, workspace.dataset, batch.head(5), tmp), {}
    )
    registry.start_canary(failing, faced=champion, share=0.5, reason="injected fault",
                          evidence={})  # fmt: skip
    wait_for_canary(url, (failing, 0.5), {}, 60)
    records = json.loads(batch[workspace.dataset.record_columns()].to_json(orient="records"))
    answers = post_records(url, records, {})
    looked = canary(params_path=workspace.params_file)
    return {"version": failing, "champion": champion, "answers": answers, "look": looked,
            "status": registry.status()}  # fmt: skip


def _wait_until_final(flow_run_id: object, timeout_s: float = 900) -> dict:
    deadline = time.monotonic() + timeout_s
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            run = client.read_flow_run(flow_run_id)
            if run.state is not None and run.state.is_final():
                states = client.read_flow_run_states(flow_run_id)
                return {"run": run, "state_names": [state.name for state in states]}
            time.sleep(2)
    raise AssertionError(f"flow run {flow_run_id} did not finish in {timeout_s} s")


def _ledger(setup: Setup) -> list[dict]:
    return Workspace.load(setup.params_file).registry.ledger.entries()


def _releasing(setup: Setup, release: str) -> None:
    if setup.release != release:
        pytest.skip(f"the {setup.release} release plays this profile's loop")


def test_drift_retrains_and_the_fresh_model_wins_under_the_real_rule(
    setup: Setup, loop: dict
) -> None:
    _releasing(setup, "direct")
    story = loop["story"]
    first, second = story["periods"]
    assert first["flagged_because"][0].startswith("traffic drift"), first
    assert first["triggered"]
    retrain = first["retrain"]
    assert retrain["state"] == "COMPLETED", retrain
    assert (retrain["champion_before"], retrain["champion_after"]) == ("1", "2"), retrain
    assert second["served_versions"] == {"2": second["rows"]}  # the service swapped by itself
    assert not second["triggered"]  # still drifted, but within the cooldown
    assert "cooldown" in second["decision"]

    decision = next(e for e in _ledger(setup) if e["version"] == "2")
    assert decision["action"] == "promote"
    assert decision["faced"] == decision["previous_champion"] == "1"
    checks = "\n".join(decision["checks"])
    # judged on the retrain's test days (the newest labels), which neither model has used
    assert "PASS window: 2013-07-01..2013-07-14" in checks, checks
    assert decision["difference"]["difference"] >= load_params(setup.params_file).registry.margin
    assert retrain["decision"]["window"].startswith("2013-07-01..2013-07-14")

    setup.configure_mlflow()
    runs = mlflow.search_runs(
        search_all_experiments=True, filter_string="tags.`loopline.retrain.outcome` = 'promote'"
    )
    assert len(runs) == 1
    assert "traffic drift" in runs.iloc[0]["tags.loopline.retrain.reason"]
    paths = write_report(story, loop["tmp"] / "report")
    assert all(path.is_file() for path in paths.values())
    assert "2013-07-01..2013-07-14" in paths["html"].read_text()


def test_two_triggers_at_once_retrain_once_and_the_second_says_why(
    setup: Setup, loop: dict
) -> None:
    """The deployment's concurrency limit queues the second run until the first is done;
    it then finds no labels the first has not used, and ends without retraining."""
    _releasing(setup, "direct")
    first, second = sorted(loop["triggered_at_once"], key=lambda f: f["run"].start_time)
    assert first["run"].state.is_completed(), first["state_names"]
    assert second["run"].state.is_completed(), second["state_names"]
    assert "AwaitingConcurrencySlot" in second["state_names"], second["state_names"]
    assert second["run"].start_time >= first["run"].end_time  # never two at once
    setup.configure_mlflow()
    retrains = mlflow.search_runs(
        search_all_experiments=True, filter_string="attributes.run_name LIKE 'retrain-2013-07-28%'"
    )
    assert len(retrains) == 1  # one retrain for the labels up to 2013-07-28


def test_a_retrain_that_does_not_beat_the_champion_is_rejected(setup: Setup, loop: dict) -> None:
    _releasing(setup, "direct")
    decision = next(e for e in _ledger(setup) if e["version"] == "3")
    assert decision["action"] == "reject", decision
    assert decision["faced"] == "2"
    # trained on the meltdown, judged after it ended: no better than the floor allows
    assert any(c.startswith("FAIL floors") for c in decision["checks"]), decision
    assert "PASS window: 2013-07-15..2013-07-28" in "\n".join(decision["checks"])
    assert decision["champion"] == "2"


def test_retrains_leave_the_checkout_untouched(setup: Setup, project: Path, loop: dict) -> None:
    status = subprocess.run(
        ["git", "status", "--porcelain"], cwd=project, capture_output=True, text=True, check=True
    ).stdout
    assert status == "", status
    experiments = subprocess.run(
        [sys.executable, "-m", "dvc", "exp", "list", "--all-commits", "--name-only"],
        cwd=project, capture_output=True, text=True, check=True, env=tool_env(),
    ).stdout  # fmt: skip
    retrains = 2 if setup.release == "direct" else 1
    assert experiments.count("retrain-") == retrains, experiments  # the record of each


def test_a_passing_retrain_enters_a_canary_steps_up_and_is_promoted_on_live_labels(
    setup: Setup, loop: dict
) -> None:
    """The retrain passes the gate and answers 20% of the flights (by key); after the next
    fortnight's labels the canary flow steps it to 50%, after the one after promotes it."""
    _releasing(setup, "canary")
    story = loop["story"]
    first, second, third = story["periods"]
    retrain = first["retrain"]
    assert retrain["state"] == "COMPLETED", retrain
    assert retrain["decision"]["action"] == "canary-start", retrain
    assert retrain["champion_after"] == "1"
    for period, share in ((second, 0.2), (third, 0.5)):
        assert set(period["served_versions"]) == {"1", "2"}, period["served_versions"]
        routed = period["served_versions"]["2"] / period["rows"]
        assert abs(routed - share) < 0.1, (routed, share)
    looks = [second["canary"], third["canary"]]
    assert [look["action"] for look in looks] == ["canary-step", "promote"], looks
    assert third["canary"]["verdict"] == "better"
    assert third["canary"]["interval"][1] < 0  # the whole interval: canary loss lower
    assert third["canary"]["pairs"] > second["canary"]["pairs"] >= CANARY["min_pairs"]
    assert story["final_champion"] == "2"

    ledger = [e for e in _ledger(setup) if e["version"] == "2"]
    assert [e["action"] for e in ledger] == ["canary-start", "canary-step", "promote"]
    assert ledger[0]["faced"] == "1"
    assert ledger[-1]["previous_champion"] == "1"
    assert ledger[-1]["canary"]["share"] == CANARY["steps"][-1]
    query = {"flows": {"name": {"any_": ["canary"]}}, "limit": 50}
    runs = httpx.post(f"{setup.api_url}/flow_runs/filter", json=query, timeout=30).json()
    names = {run["name"]: run["state_type"] for run in runs}
    assert {"canary-v2-step1", "canary-v2-step2"} <= set(names), names
    assert names["canary-v2-step2"] == "COMPLETED"


def test_a_failing_canary_is_rolled_back_by_a_guardrail_after_one_batch(
    setup: Setup, loop: dict
) -> None:
    """Every request the injected challenger scores fails: the champion answers them all,
    and the first look rolls it back on errors and the routed share, needing no label."""
    _releasing(setup, "canary")
    failing = loop["failing"]
    assert {a["model_version"] for a in failing["answers"]} == {failing["champion"]}
    look = failing["look"]
    assert look["action"] == "canary-rollback", look
    assert look["reason"].startswith("guardrail: errors: "), look["reason"]
    assert "sample ratio: 0 of" in look["reason"]
    assert look["evidence"]["pairs"] == 0
    assert look["evidence"]["guardrails"]["error_rate"] == 1.0
    assert failing["status"]["canary"] is None
    assert failing["status"]["aliases"]["champion"]["version"] == failing["champion"]


# -- the pages a person reads after the loop ran ---------------------------------------------
# One page each, opened in chromium (tests/e2e/conftest.py), in the team profile: its
# servers (Prefect, MLflow, the Evidently service) are still up; the service is started
# again for its API page. The UIs are single-page apps: each test waits for the text the
# page renders, not for the page to load. The report page is the replay's own file.

DRIFT_PANELS = ("Traffic drift share", "Counted features: drift score")
DATA_QUALITY_PANELS = ("Missing values: share of the batch", "Duplicated rows")


@pytest.fixture(scope="module")
def team(setup: Setup) -> Params:
    """The team params file's settings: where each server answers (a skip in embedded)."""
    if setup.work_pool is None:
        pytest.skip("the team profile's servers serve these pages (embedded keeps files)")
    return load_params(setup.params_file)


@pytest.fixture(scope="module")
def service(team: Params, setup: Setup, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The prediction service for the team params file, serving its champion; its URL."""
    tmp = tmp_path_factory.mktemp("service-pages")
    with Processes() as running:
        yield running.start(processes.bentoml_service(
            setup.params_file, "127.0.0.1", free_port(), tmp / "service.log",
            BENTOML_HOME=str(tmp / "bento"),
        ))  # fmt: skip


def _weekly_in_words(cron: str) -> tuple[str, str]:
    """The clock and the day in the words Prefect's UI gives a weekly cron.

    "0 3 * * 1" reads "At 03:00 AM, only on Monday": ("03:00 AM", "Monday").
    """
    minute, hour, day, month, weekday = cron.split()
    if (day, month) != ("*", "*") or not f"{minute}{hour}{weekday}".isdigit():
        raise AssertionError(f"retrain.cron {cron!r} is not one weekly time, as this test reads")
    clock = dt.time(int(hour), int(minute)).strftime("%I:%M %p")
    return clock, calendar.day_name[(int(weekday) - 1) % 7]  # cron counts from Sunday = 0


def _interval_in_words(minutes: int) -> str:
    """How Prefect's UI words an interval schedule of `minutes` (an hour or less)."""
    if minutes > 60:
        raise AssertionError(f"an interval of {minutes} minutes: this test reads up to an hour")
    return "Hourly" if minutes == 60 else f"Every {minutes} minutes"


def test_prefect_lists_the_retrain_schedule_and_the_monitor_interval(
    team: Params, browser_page: Page
) -> None:
    """Deployments page: the loop's deployments, each with its schedule in words."""
    browser_page.goto(f"{team.prefect.api_url.removesuffix('/api')}/deployments")
    retrain = browser_page.get_by_role("row").filter(has_text="loopline-retrain")
    for words in _weekly_in_words(team.retrain.cron):
        expect(retrain).to_contain_text(words)
    monitor_row = browser_page.get_by_role("row").filter(has_text="loopline-monitor")
    expect(monitor_row).to_contain_text(_interval_in_words(team.monitor.interval_minutes))


def _version_row(page: Page, version: str) -> Locator:
    """The row of one version in the registered model's table."""
    link = page.get_by_role("link", name=f"Version {version}", exact=True)
    return page.get_by_role("row").filter(has=link)


def test_mlflow_shows_the_champion_and_the_challenger_on_their_versions(
    team: Params, setup: Setup, loop: dict, browser_page: Page
) -> None:
    """Registered model page: each alias on the row of the version it points to."""
    registry = Workspace.load(setup.params_file).registry
    versions = {alias: registry.alias_version(alias) for alias in (CHAMPION, CHALLENGER)}
    assert versions == {CHAMPION: "2", CHALLENGER: "3"}  # the promoted and the rejected retrain
    browser_page.goto(f"{team.mlflow.tracking_uri}/#/models/{registry.name}")
    chips = {alias: f"@\xa0{alias}" for alias in versions}  # how the table shows an alias
    for alias, version in versions.items():
        expect(_version_row(browser_page, version)).to_contain_text(chips[alias])
    first_champion = _version_row(browser_page, "1")
    for chip in chips.values():
        expect(first_champion).not_to_contain_text(chip)  # both aliases moved on from it


def test_evidently_dashboard_plots_drift_and_data_quality_of_the_monitored_batches(
    team: Params, loop: dict, browser_page: Page
) -> None:
    """The project's dashboard: the drift and data-quality panels, each with a line through
    the monitored batches (dated at each batch's last day)."""
    browser_page.goto(str(team.monitor.workspace))
    browser_page.get_by_role("link", name=team.monitor.project, exact=True).click()
    batch_days = [period["last_day"] for period in loop["story"]["periods"]]
    for title in (*DRIFT_PANELS, *DATA_QUALITY_PANELS):
        heading = browser_page.get_by_role("heading", name=title, exact=True)
        panel = browser_page.locator(".MuiCard-root").filter(has=heading)
        expect(panel, f"panel {title!r}").to_be_visible()
        line = panel.locator(".MuiLineElement-root").first  # drawn once a batch has a value
        expect(line, f"a line in {title!r}").to_be_attached()
        for day in batch_days:
            expect(panel, f"batch {day} in {title!r}").to_contain_text(day)


def test_the_replay_report_shows_its_plot_summary_and_one_row_per_batch(
    loop: dict, browser_page: Page, tmp_path: Path
) -> None:
    """report.html, opened as a file: the heading, the plot, the summary, the batches."""
    story = loop["story"]
    browser_page.goto(write_report(story, tmp_path)["html"].as_uri())
    heading = browser_page.get_by_role("heading", level=1)
    expect(heading).to_have_text(f"Loopline: replay of {story['replayed']}")
    plot = browser_page.get_by_role("img")
    expect(plot).to_be_visible()
    assert plot.evaluate("image => image.naturalWidth") > 0  # the embedded PNG decodes
    retrains = sum(1 for period in story["periods"] if period["triggered"])
    summary = browser_page.get_by_role("listitem").filter(has_text="retrains triggered")
    expect(summary).to_have_text(f"retrains triggered: {retrains}")
    table = browser_page.get_by_role("table")
    expect(table.get_by_role("row")).to_have_count(len(story["periods"]) + 1)  # and the header
    for period in story["periods"]:
        expect(table).to_contain_text(f"{period['first_day']}..{period['last_day']}")


def test_the_service_api_page_lists_the_prediction_routes(service: str, browser_page: Page) -> None:
    """The service's Swagger UI (BentoML serves it at /, its OpenAPI at /docs.json)."""
    browser_page.goto(service)
    for method, path in (("post", "/predict"), ("post", "/jobs"), ("get", "/jobs/{job_id}")):
        operation = f".opblock-{method} .opblock-summary-path[data-path='{path}']"
        expect(browser_page.locator(operation), f"{method.upper()} {path}").to_be_visible()
