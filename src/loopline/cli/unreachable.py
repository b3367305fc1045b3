"""A command whose server is down fails fast, in one line naming the server.

MLflow's client retries a refused connection seven times with growing back-off (over two
minutes) and then raises an exception whose message runs to a screen; Prefect's raises
`httpx.ConnectError` from deep in its client. For a command typed by hand both are wrong:
`client_settings` makes MLflow give up after about ten seconds, and `server_down` turns
either failure into one line saying which server could not be reached and what to do.
"""

from __future__ import annotations

import logging
import re

import httpx
from mlflow.exceptions import MlflowException

from loopline.infra.environment import set_for_this_process

# MLflow's HTTP client, for this process only (a value already set wins): 2 retries, 1 s
# then 2 s apart, 10 s per attempt. What the command starts (servers, workers, the replay)
# keeps MLflow's own retries (7, over about two minutes) and rides a restart out.
MLFLOW_CLIENT = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0.5",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
}
MLFLOW_URL = re.compile(r"API request to (https?://[^/\s]+)")
HOW = "is it running? `make team` starts the team servers, `make ui` the local UIs"


def client_settings() -> None:
    """Give up on an unreachable server within about ten seconds.

    urllib3's warning per retry is silenced: the one line at the end says it all.
    """
    set_for_this_process(MLFLOW_CLIENT)
    logging.getLogger("urllib3.connectionpool").setLevel(logging.ERROR)


def _chain(error: BaseException) -> list[BaseException]:
    """`error` and every exception it was raised from or while handling."""
    chain: list[BaseException] = []
    while error is not None and error not in chain:
        chain.append(error)
        error = error.__cause__ or error.__context__
    return chain


def server_down(error: BaseException) -> str | None:
    """One line naming the server `error` could not reach (None: another failure)."""
    for link in _chain(error):
        if isinstance(link, httpx.ConnectError | httpx.ConnectTimeout):
            url = link.request.url
            return f"cannot reach the server at {url.scheme}://{url.netloc.decode()} ({HOW})"
        if isinstance(link, MlflowException) and "Max retries exceeded" in link.message:
            found = MLFLOW_URL.search(link.message)
            where = found.group(1) if found else "its tracking URI"
            return f"cannot reach the MLflow server at {where} ({HOW})"
    return None
