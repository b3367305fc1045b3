"""Asynchronous prediction jobs: submitted to the live service, run by Prefect, delivered once.

The service stores each job before it answers, the score-jobs flow runs it on a real
Prefect server's work pool, and neither a SIGKILL of the service nor of the worker (its
flow-run process included) loses or repeats a result.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pandas as pd
import psutil
import pytest
import yaml

from loopline.infra import processes
from loopline.infra.job_store import DONE, FAILED, JobStore
from loopline.infra.prediction_log import read_predictions
from loopline.infra.processes import Processes
from loopline.scoring.batch import score_file
from loopline.scoring.registered import load_version
from loopline.serving.jobs import result_parquet, run_job, run_jobs
from loopline.workspace import Workspace
from tests.conftest import fresh_database, tool_env
from tests.integration.conftest import ServingWorld, bento_server

pytestmark = pytest.mark.slow
PARQUET = "application/vnd.apache.parquet"
POOL = "loopline-jobs-test"


def _jobs_params(
    world: ServingWorld,
    name: str,
    api_url: str | None = None,
    database: str | None = None,
    **jobs: object,
) -> Path:
    """A params file of the world with its own job store and prediction log (SQLite files,
    or tables in one PostgreSQL `database`)."""
    raw = yaml.safe_load((world.root / "params.yaml").read_text())
    stem = Path(name).stem
    raw["serve"]["prediction_log"] = database or f"{stem}-predictions.sqlite"
    raw["jobs"].update({"store": database or f"{stem}-jobs.sqlite", **jobs})
    raw["prefect"]["api_url"] = api_url
    path = world.root / name
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def _records(world: ServingWorld, columns: list[str], copies: int = 1) -> pd.DataFrame:
    frame = pd.concat([world.test_records[columns]] * copies, ignore_index=True)
    return frame


def _parquet(frame: pd.DataFrame) -> bytes:
    sink = io.BytesIO()
    frame.to_parquet(sink, index=False)
    return sink.getvalue()


def _job_rows(log: Path | str, job_id: str) -> pd.DataFrame:
    logged = read_predictions(log)
    return logged[logged["request_id"] == f"job-{job_id}"]


class RunnerDied(BaseException):
    """A runner's process ending abruptly (nothing in the runner may catch it)."""


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_job_scores_like_batch_scoring_and_a_chunk_scored_twice_is_kept_once(
    serving_world: ServingWorld, tmp_path: Path, dataset, monkeypatch: pytest.MonkeyPatch,
    backend: str, request: pytest.FixtureRequest,
) -> None:  # fmt: skip
    database = None
    if backend == "postgresql":  # team mode's stores: both in one PostgreSQL database
        url = fresh_database(request.getfixturevalue("postgres"))
        database = url.render_as_string(hide_password=False)
    params = _jobs_params(serving_world, f"jobs-runner-{backend}.yaml", database=database,
                          chunk_rows=400, lease_s=0.5)  # fmt: skip
    workspace = Workspace.load(params)
    records = _records(serving_world, dataset.record_columns(), copies=2)
    job, _ = workspace.job_store.submit(_parquet(records), len(records), chunk_rows=400)
    # A first runner stores chunk 0, scores and logs chunk 1, then dies before storing it.
    store_chunk = JobStore.store_chunk

    def dies_at_chunk_1(store: JobStore, job_id: str, owner: str, chunk: int, *args, **kw):
        if chunk == 1:
            raise RunnerDied
        return store_chunk(store, job_id, owner, chunk, *args, **kw)

    monkeypatch.setattr(JobStore, "store_chunk", dies_at_chunk_1)
    with pytest.raises(RunnerDied):
        run_jobs(workspace, "first-runner")
    monkeypatch.undo()
    assert workspace.job_store.get(job.job_id).rows_done == 400
    time.sleep(0.6)  # its lease lapses
    ended = run_jobs(workspace, "second-runner")
    assert [(j.job_id, j.state, j.rows_done, j.attempts) for j in ended] == [
        (job.job_id, DONE, len(records), 2)
    ]
    result = pd.read_parquet(io.BytesIO(result_parquet(workspace.job_store, job.job_id)))
    expected_ids = [f"job-{job.job_id}-{i}" for i in range(len(records))]
    assert result["prediction_id"].tolist() == expected_ids
    pd.testing.assert_frame_equal(result[records.columns], records)
    source, target = tmp_path / "in.parquet", tmp_path / "out.parquet"
    records.to_parquet(source, index=False)
    version = load_version(workspace.registry, ended[0].model_version)
    score_file(version, source, target, set(), progress=False)
    assert result["probability"].tolist() == pd.read_parquet(target)["probability"].tolist()
    logged = _job_rows(workspace.params.serve.prediction_log, job.job_id)
    assert len(logged) == len(records)  # chunk 1's rows, logged by both runners, once
    assert set(logged["prediction_id"]) == set(expected_ids)


def test_a_job_with_bad_rows_fails_with_the_reason(serving_world: ServingWorld, dataset) -> None:
    params = _jobs_params(serving_world, "jobs-bad.yaml")
    workspace = Workspace.load(params)
    records = _records(serving_world, dataset.record_columns()).iloc[:10].drop(columns="carrier")
    workspace.job_store.submit(_parquet(records), 10, chunk_rows=5)
    ended = run_job(workspace, workspace.job_store.claim("r", lease_s=60), "r")
    assert ended.state == FAILED
    assert "carrier" in ended.reason


def test_the_job_api_answers_every_mistake_with_its_reason(
    serving_world: ServingWorld, tmp_path: Path, dataset
) -> None:
    params = _jobs_params(serving_world, "jobs-api.yaml")  # no Prefect: jobs stay queued
    records = _records(serving_world, dataset.record_columns()).iloc[:50]
    body = {"records": json.loads(records.to_json(orient="records"))}
    with bento_server(params, tmp_path) as url, httpx.Client(base_url=url, timeout=30) as http:
        first = http.post("/jobs", json=body, headers={"idempotency-key": "k-1"})
        assert first.status_code == 202, first.text
        job = first.json()
        assert (job["state"], job["rows"], first.headers["location"]) == (
            "queued",
            50,
            f"/jobs/{job['job_id']}",
        )
        retried = http.post("/jobs", json=body, headers={"idempotency-key": "k-1"})
        assert (retried.status_code, retried.json()["job_id"]) == (200, job["job_id"])
        other = {"records": body["records"][:10]}
        conflict = http.post("/jobs", json=other, headers={"idempotency-key": "k-1"})
        assert conflict.status_code == 422
        assert "different body" in conflict.json()["error"]
        assert http.get(f"/jobs/{job['job_id']}").json()["state"] == "queued"
        early = http.get(f"/jobs/{job['job_id']}/result")
        assert early.status_code == 409
        assert "queued" in early.json()["error"]
        assert http.get("/jobs/no-such-job").status_code == 404
        bad = {"records": [{**body["records"][0], "month": 13}]}
        invalid = http.post("/jobs", json=bad)
        assert invalid.status_code == 400
        assert invalid.json()["details"][0]["loc"][-1] == "month"
        missing = _parquet(records.drop(columns="carrier"))
        lacking = http.post("/jobs", content=missing, headers={"content-type": PARQUET})
        assert lacking.status_code == 400
        assert "carrier" in lacking.json()["error"]
        garbage = http.post("/jobs", content=b"not parquet", headers={"content-type": PARQUET})
        assert garbage.status_code == 400
        assert "not a Parquet file" in garbage.json()["error"]
        csv = http.post("/jobs", content=b"a,b", headers={"content-type": "text/csv"})
        assert csv.status_code == 415
        assert PARQUET in csv.json()["error"]
        upload = http.post("/jobs", content=_parquet(records), headers={"content-type": PARQUET})
        assert upload.status_code == 202
        assert upload.json()["rows"] == 50


# -- the whole path, under SIGKILL --------------------------------------------------------------


def _with_descendants(pid: int) -> list[psutil.Process]:
    parent = psutil.Process(pid)
    return [parent, *parent.children(recursive=True)]


def _kill_tree(pid: int) -> None:
    """SIGKILL a process and everything it started (a worker and its flow-run processes)."""
    for process in _with_descendants(pid):
        with contextlib.suppress(psutil.NoSuchProcess):
            os.kill(process.pid, signal.SIGKILL)


@contextlib.contextmanager
def _worker(api_url: str, cwd: Path, log_file: Path) -> Iterator[int]:
    """A process worker of the test pool; its pid."""
    with Processes() as running:
        running.start(processes.prefect_worker(POOL, f"{POOL}-{time.monotonic_ns()}", api_url,
                                               cwd, log_file))  # fmt: skip
        yield running.running[-1].process.pid


def _deploy_jobs(api_url: str, params: Path) -> None:
    code = (
        "import sys; from pathlib import Path; from prefect import deploy; "
        "from pipelines.deployments import jobs_deployment; "
        "p = Path(sys.argv[1]); deploy(jobs_deployment(p, {'working_dir': str(p.parent)}), "
        f"work_pool_name={POOL!r}, build=False, push=False, print_next_steps_message=False)"
    )
    with Processes() as running:
        running.capture(
            [sys.executable, "-c", code, str(params)], tool_env(PREFECT_API_URL=api_url)
        )


def _poll(
    http: httpx.Client, job_ids: list[str], until: Callable[[dict], bool], timeout_s: float
) -> dict[str, dict]:
    """Every job's status, once `until(statuses)` holds (asked every 0.2 s)."""
    deadline = time.monotonic() + timeout_s
    statuses: dict[str, dict] = {}
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            statuses = {j: http.get(f"/jobs/{j}").json() for j in job_ids}
            if until(statuses):
                return statuses
        time.sleep(0.2)
    raise AssertionError(f"jobs not there within {timeout_s:.0f} s: {statuses}")


def test_jobs_survive_sigkill_of_the_service_and_the_worker_and_deliver_each_row_once(
    serving_world: ServingWorld, tmp_path: Path, prefect_api: str, dataset
) -> None:
    params = _jobs_params(serving_world, "jobs-kill.yaml", prefect_api,
                          chunk_rows=4000, lease_s=4)  # fmt: skip
    frame = _records(serving_world, dataset.record_columns(), copies=60)
    small = frame.iloc[:3000]
    env = {"PREFECT_API_URL": prefect_api}
    with _worker(prefect_api, serving_world.root, tmp_path / "worker-1.log") as worker:
        _deploy_jobs(prefect_api, params)
        with bento_server(params, tmp_path, **env) as url:
            http = httpx.Client(base_url=url, timeout=60)
            upload = {"content-type": PARQUET, "idempotency-key": "big"}
            big = http.post("/jobs", content=_parquet(frame), headers=upload)
            small_body = {"records": json.loads(small.to_json(orient="records"))}
            second = http.post("/jobs", json=small_body, headers={"idempotency-key": "small"})
            job_ids = [big.json()["job_id"], second.json()["job_id"]]
            midway = _poll(http, job_ids, lambda s: 0 < s[job_ids[0]]["rows_done"] < len(frame),
                           timeout_s=120)  # fmt: skip
            service_pid = processes_pid(url)
            _kill_tree(worker)
            _kill_tree(service_pid)
    assert 0 < midway[job_ids[0]]["rows_done"] < len(frame)
    with _worker(prefect_api, serving_world.root, tmp_path / "worker-2.log"), \
            bento_server(params, tmp_path, **env) as url:  # fmt: skip
        http = httpx.Client(base_url=url, timeout=60)
        retried = http.post("/jobs", json=small_body, headers={"idempotency-key": "small"})
        assert (retried.status_code, retried.json()["job_id"]) == (200, job_ids[1])
        done = _poll(http, job_ids, lambda s: all(v["state"] in {DONE, FAILED} for v in s.values()),
                     timeout_s=240)  # fmt: skip
        results = [
            pd.read_parquet(io.BytesIO(http.get(f"/jobs/{j}/result").content)) for j in job_ids
        ]
    assert [done[j]["state"] for j in job_ids] == [DONE, DONE]
    assert done[job_ids[0]]["attempts"] >= 2  # the killed attempt, then the one that finished
    log_file = serving_world.root / "jobs-kill-predictions.sqlite"
    for job_id, submitted, result in zip(job_ids, (frame, small), results, strict=True):
        assert len(result) == len(submitted)
        assert result["prediction_id"].tolist() == [
            f"job-{job_id}-{i}" for i in range(len(submitted))
        ]
        pd.testing.assert_frame_equal(result[submitted.columns], submitted.reset_index(drop=True))
        logged = _job_rows(log_file, job_id)
        assert len(logged) == len(submitted)  # every row logged, none twice


def processes_pid(url: str) -> int:
    """The pid of the `bentoml serve` process answering at `url` (its arbiter)."""
    port = url.rsplit(":", 1)[-1]
    for process in psutil.process_iter(["cmdline"]):
        command = process.info["cmdline"] or []
        if "bentoml" in command and "serve" in command and port in command:
            return process.pid
    raise AssertionError(f"no bentoml serve on {url}")
