"""score-jobs flow: run the asynchronous prediction jobs waiting in the job store.

The service asks for a run at every `POST /jobs` (and when it starts with jobs left
unfinished); the deployment also runs every `jobs.sweep_minutes`. A run takes every job it
can claim, oldest first, and ends when none is left; two runs at once share the work (each
job goes to one of them). See `loopline.serving.jobs`.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow, get_run_logger
from prefect.runtime import flow_run

from loopline.serving.jobs import JOBS_FLOW, run_jobs, runner_name
from loopline.workspace import Workspace


@flow(name=JOBS_FLOW)
def score_jobs(params_path: Path = Path("params.yaml"), job_id: str = "") -> dict:
    """Run the claimable jobs (`job_id` names the one that asked for this run, if any)."""
    logger = get_run_logger()
    owner = f"{runner_name()}-{flow_run.get_id() or 'local'}"
    ended = run_jobs(Workspace.load(params_path), owner, logger)
    if job_id and job_id not in {job.job_id for job in ended}:
        logger.info("job %s was taken by another run (or is done)", job_id)
    return {job.job_id: job.state for job in ended}
