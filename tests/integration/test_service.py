"""The live BentoML service on a loopback port: predictions, bad input, hot swap, log, key."""

from __future__ import annotations

import json
import re
import resource
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import mlflow
import numpy as np
import pandas as pd
import pytest
from sqlalchemy.engine import URL

from loopline.data import columns as cols
from loopline.infra.prediction_log import read_predictions
from loopline.registry.versions import CHAMPION
from loopline.scoring.features import UNKNOWN_CODE
from loopline.scoring.registered import load_version
from tests.conftest import ROOT, database_away, fresh_database, tool_env
from tests.integration.conftest import ServingWorld, bento_server

pytestmark = pytest.mark.slow


def _records(frame: pd.DataFrame, columns: list[str]) -> list[dict]:
    return json.loads(frame[columns].to_json(orient="records"))


@pytest.fixture(scope="module")
def server(serving_world: ServingWorld, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with bento_server(serving_world.root / "params.yaml", tmp_path_factory.mktemp("bento")) as url:
        yield url


@pytest.fixture(scope="module")
def columns(dataset) -> list[str]:
    return dataset.record_columns()


def test_live_probabilities_equal_the_offline_predictions_of_the_same_version(
    server: str, serving_world: ServingWorld, columns: list[str]
) -> None:
    """The whole test window over HTTP == the same registered version scored offline."""
    records = serving_world.test_records
    served = []
    for start in range(0, len(records), 100):
        chunk = _records(records.iloc[start : start + 100], columns)
        response = httpx.post(f"{server}/predict", json={"records": chunk}, timeout=60)
        assert response.status_code == 200, response.text
        served += response.json()["predictions"]
    registry = serving_world.registry()
    version = registry.alias_version(CHAMPION)
    offline = mlflow.pyfunc.load_model(registry.model_uri(version)).predict(records[columns])
    assert {p["model_version"] for p in served} == {version}
    np.testing.assert_allclose(
        [p["probability"] for p in served], offline["probability"], rtol=1e-12
    )
    assert [p["label"] for p in served] == offline["label"].tolist()


def test_health_readiness_and_metadata(server: str, serving_world: ServingWorld) -> None:
    assert httpx.get(f"{server}/healthz").status_code == 200
    assert httpx.get(f"{server}/readyz").status_code == 200
    metadata = httpx.get(f"{server}/metadata").json()
    assert metadata["champion"]["model_version"] == serving_world.registry().alias_version(CHAMPION)
    assert metadata["champion"]["family"] == "logistic"
    assert "carrier" in metadata["input_schema"]["properties"]
    assert httpx.get(f"{server}/docs.json").json()["paths"]["/predict"]


def _bad_requests(good: dict, max_records: int) -> dict[str, tuple[bytes, str]]:
    """name: (raw body, what the error must mention)."""

    def body(records: list) -> bytes:
        return json.dumps({"records": records}, allow_nan=True).encode()

    missing = {k: v for k, v in good.items() if k != "carrier"}
    return {
        "missing field": (body([missing]), "carrier"),
        "wrong type": (body([good | {"distance": "far"}]), "distance"),
        "unknown category": (body([good | {"origin": "XXX"}]), "origin"),
        "NaN": (body([good | {"temp": float("nan")}]), "temp"),
        "infinity": (body([good | {"pressure": float("inf")}]), "pressure"),
        "empty list": (body([]), "records"),
        "too many records": (body([good] * (max_records + 1)), "records"),
        "unknown field": (body([good | {"gate": "B12"}]), "gate"),
        "malformed JSON": (b'{"records": [', "JSON"),
        "not an object": (b"[1, 2, 3]", ""),
        "oversized payload": (b'{"records": [' + b" " * 250_000 + b"]}", "bytes"),
    }


def test_every_kind_of_bad_input_gets_a_4xx_naming_the_problem(
    server: str, serving_world: ServingWorld, columns: list[str]
) -> None:
    good = _records(serving_world.test_records.iloc[:1], columns)[0]
    limit = serving_world.params.serve.max_records_per_request
    for name, (raw, mention) in _bad_requests(good, limit).items():
        response = httpx.post(
            f"{server}/predict",
            content=raw,
            headers={"content-type": "application/json"},
            timeout=30,
        )
        assert 400 <= response.status_code < 500, (name, response.status_code, response.text[:300])
        assert mention in response.text, (name, response.text[:300])


def test_unseen_but_valid_categories_are_scored_like_training_unknowns(
    server: str, serving_world: ServingWorld, columns: list[str]
) -> None:
    """An unseen destination or tail number is the unknown category, nothing else."""
    base = _records(serving_world.test_records.iloc[:1], columns)[0]
    unseen = base | {"dest": "ZZZ", "tailnum": "N0NE"}
    records = [unseen, base | {"dest": "QQQ", "tailnum": "N9ZZ"}, unseen | {"tailnum": None}]
    response = httpx.post(f"{server}/predict", json={"records": records})
    assert response.status_code == 200
    served = [p["probability"] for p in response.json()["predictions"]]
    # any two unseen values score alike, and an unknown plane is scored as no plane at all
    # (to the last bits BLAS may round differently by a row's place in the batch)
    assert served[1] == pytest.approx(served[0], rel=1e-12)
    assert served[2] == pytest.approx(served[0], rel=1e-12)
    registry = serving_world.registry()
    scorer = load_version(registry, registry.alias_version(CHAMPION)).scorer
    assert served[0] == pytest.approx(scorer.score_records([unseen])[0], rel=1e-12)
    features = scorer.features(cols.from_records([unseen], scorer.record_fields))[0]
    names = scorer.tables.feature_names
    for column in ("dest", "route", "plane_manufacturer", "plane_engine"):
        assert features[names.index(column)] == UNKNOWN_CODE, column  # training's unknown code
    routes = scorer.tables.history_table("route")  # an unseen route gets the overall rate
    assert routes.rate(f"{unseen['origin']}-ZZZ") == routes.rates[-1]


def test_every_prediction_is_logged_with_its_request(
    server: str, serving_world: ServingWorld, columns: list[str]
) -> None:
    records = _records(serving_world.test_records.iloc[:7], columns)
    body = httpx.post(f"{server}/predict", json={"records": records}).json()
    logged = read_predictions(serving_world.root / "predictions.sqlite")
    mine = logged[logged["request_id"] == body["request_id"]]
    assert len(mine) == 7
    assert mine["prediction_id"].tolist() == [p["prediction_id"] for p in body["predictions"]]
    assert mine["carrier"].tolist() == [r["carrier"] for r in records]
    assert mine["shadow_version"].isna().all()


def test_fuzzing_the_openapi_schema_finds_no_server_error(server: str, tmp_path: Path) -> None:
    """schemathesis generates valid and invalid requests from /docs.json: never a 5xx."""
    result = subprocess.run(
        [sys.executable, "-m", "schemathesis.cli", "run", f"{server}/docs.json",
         "--checks", "not_a_server_error", "--max-examples", "60", "--seed", "2013",
         "--request-timeout", "30", "--report-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=600, check=False, env=tool_env(),
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    # Every generated case passed (a warning that a job's result stayed 404 or 409 is fine:
    # fuzzed jobs are never run here, there is no Prefect server).
    assert re.search(r"(\d+) generated, \1 passed", result.stdout), result.stdout[-4000:]
    assert "10 selected / 10 total" in result.stdout  # /predict, /metadata, /jobs among them


STALLED = 500


STALLS = {  # where a stalled connection stops sending
    "mid-body": b"POST /predict HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
    b'content-length: 2000\r\n\r\n{"records": [{"carrier": ',
    "mid-headers": b"POST /predict HTTP/1.1\r\nhost: x\r\ncontent-type: applic",
}


def _stall(url: str, opening: bytes) -> socket.socket:
    """A connection that sends `opening`, then nothing."""
    host, port = httpx.URL(url).host, httpx.URL(url).port
    stalled = socket.create_connection((host, port), timeout=30)
    stalled.sendall(opening)
    return stalled


def _received_once_closed(stalled: socket.socket) -> bytes:
    """What the server sent, read until it closed (a server that keeps the connection open
    makes `recv` time out, failing the test)."""
    received = b""
    while chunk := stalled.recv(65536):
        received += chunk
    return received


def _status_once_closed(stalled: socket.socket) -> bytes:
    """The status line the server sent before it closed the connection."""
    return _received_once_closed(stalled).split(b"\r\n", 1)[0]


@pytest.mark.parametrize("where", list(STALLS))
def test_stalled_clients_time_out_with_408_and_never_block_normal_requests(
    where: str, server: str, serving_world: ServingWorld, columns: list[str]
) -> None:
    """500 connections stall mid-body, or mid-headers: normal requests are answered
    meanwhile, and after serve.client_timeout_s every stalled connection gets 408 and is
    closed by the server."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 4096)), hard))
    payload = {"records": _records(serving_world.test_records.iloc[:5], columns)}
    stalled = [_stall(server, STALLS[where]) for _ in range(STALLED)]
    try:
        with httpx.Client(timeout=30) as http:
            statuses = Counter(
                http.post(f"{server}/predict", json=payload).status_code for _ in range(50)
            )
        assert statuses == {200: 50}
        for connection in stalled:  # answered meanwhile: no stalled one has its 408 yet
            connection.setblocking(False)
            with pytest.raises(BlockingIOError):
                connection.recv(1)
            connection.settimeout(30)
        answers = Counter(_status_once_closed(connection) for connection in stalled)
    finally:
        for connection in stalled:
            connection.close()
    assert answers == {b"HTTP/1.1 408 Request Timeout": STALLED}


def _answer_once_under_bound(url: str, payload: dict) -> httpx.Response:
    """The first answer that is not a refusal for capacity, within 10 s: the worker sees
    closed connections leave only as it reads their ends."""
    deadline = time.monotonic() + 10
    with httpx.Client(timeout=30) as http:
        while True:
            try:
                answer = http.post(url, json=payload)
            except httpx.TransportError:  # refused and closed before the answer was read
                answer = None
            if (answer is not None and answer.status_code != 503) or time.monotonic() > deadline:
                assert answer is not None, "the service kept refusing connections"
                return answer
            time.sleep(0.05)


def test_connections_past_the_workers_bound_get_503_at_once_and_it_serves_again_after(
    serving_world: ServingWorld, columns: list[str], tmp_path: Path
) -> None:
    """One worker allowing 40 connections: 40 open ones (nothing sent yet) are held, the
    next 10 are answered 503 with Retry-After and closed as soon as they connect (not
    408 at the header deadline); once the 40 close, a request is answered 200."""
    params = serving_world.write_params("params-few-connections.yaml", workers=1,
                                        max_connections=40)  # fmt: skip
    payload = {"records": _records(serving_world.test_records.iloc[:2], columns)}
    with bento_server(params, tmp_path) as server:
        held = [_stall(server, b"") for _ in range(40)]  # accepted in connect order
        refused = [_stall(server, b"") for _ in range(10)]
        answers = [_received_once_closed(connection) for connection in refused]
        for connection in held:  # not answered: they are within the bound
            connection.setblocking(False)
            with pytest.raises(BlockingIOError):
                connection.recv(1)
            connection.close()
        after = _answer_once_under_bound(f"{server}/predict", payload)
    assert {a.split(b"\r\n", 1)[0] for a in answers} == {b"HTTP/1.1 503 Service Unavailable"}
    assert all(b"\r\nretry-after: 1\r\n" in a for a in answers)
    assert all(b"over capacity (40 connections open)" in a for a in answers)
    assert after.status_code == 200


def test_while_the_log_database_is_down_requests_get_503_and_readiness_says_so(
    serving_world: ServingWorld, columns: list[str], postgres: URL, tmp_path: Path
) -> None:
    """The prediction log on PostgreSQL; its database disappears under requests (connections
    cut, database renamed): every /predict is a 503 with Retry-After and a one-line reason,
    never a 500 or a dropped connection, and /readyz is not ready; once it is back the
    service recovers by itself."""
    url = fresh_database(postgres)
    name = url.database
    params = serving_world.write_params(
        "params-pg-log.yaml", prediction_log=url.render_as_string(hide_password=False)
    )
    payload = {"records": _records(serving_world.test_records.iloc[:3], columns)}
    with bento_server(params, tmp_path) as server, httpx.Client(timeout=30) as http:
        assert http.post(f"{server}/predict", json=payload).status_code == 200
        with database_away(postgres, name):
            answers = [http.post(f"{server}/predict", json=payload) for _ in range(20)]
            assert {a.status_code for a in answers} == {503}
            assert all(a.headers["retry-after"] == "1" for a in answers)
            reason = answers[-1].json()["error"]
            assert reason.startswith("prediction log unavailable: OperationalError: ")
            assert "\n" not in reason
            deadline = time.monotonic() + 30
            while http.get(f"{server}/readyz").status_code == 200:  # each worker learns it
                http.post(f"{server}/predict", json=payload)
                assert time.monotonic() < deadline, "/readyz stayed ready with the log down"
        deadline, in_a_row = time.monotonic() + 30, 0
        while in_a_row < 10:  # both workers' writers probe the database back, by themselves
            assert time.monotonic() < deadline, "the service did not recover"
            ok = http.post(f"{server}/predict", json=payload).status_code == 200
            in_a_row = in_a_row + 1 if ok else 0
            time.sleep(0.1)
        assert http.get(f"{server}/readyz").status_code == 200


def test_hot_swap_under_concurrent_requests_drops_nothing(
    server: str, serving_world: ServingWorld, columns: list[str]
) -> None:
    """Eight clients keep predicting while the champion moves; every request succeeds, the
    service ends up on the new version, and /metadata says so. Runs last in this module."""
    registry = serving_world.registry()
    old, new = registry.alias_version(CHAMPION), "2"
    payload = {"records": _records(serving_world.test_records.iloc[:20], columns)}
    statuses: Counter[int] = Counter()
    answers: list[list[dict]] = []
    errors: list[str] = []
    stop = threading.Event()

    def client() -> None:
        with httpx.Client(timeout=30) as http:
            while not stop.is_set():
                response = http.post(f"{server}/predict", json=payload)
                statuses[response.status_code] += 1
                if response.status_code != 200:
                    errors.append(response.text[:300])
                if response.status_code == 200:
                    answers.append(response.json()["predictions"])

    threads = [threading.Thread(target=client) for _ in range(8)]
    for thread in threads:
        thread.start()
    try:
        registry.force_promote(new, "hot swap test")
        assert httpx.post(f"{server}/reload", timeout=60).json()["model_version"] == new
        deadline = sum(statuses.values()) + 200
        while sum(statuses.values()) < deadline:
            stop.wait(0.05)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert set(statuses) == {200}, (statuses, errors[:3])
    # A request is answered wholly by the one version it started on: every prediction
    # names it, and every probability is that version's own offline score for the record.
    expected = {
        v: load_version(registry, v).scorer.score_records(payload["records"]) for v in (old, new)
    }
    versions: Counter[str] = Counter()
    for answer in answers:
        (version,) = {p["model_version"] for p in answer}
        np.testing.assert_allclose([p["probability"] for p in answer], expected[version],
                                   rtol=1e-12)  # fmt: skip
        versions[version] += 1
    assert versions[old] > 0
    assert versions[new] > 0
    # /reload swapped the worker it reached; the other API worker swaps at its next poll
    deadline = time.monotonic() + 10 * serving_world.params.serve.poll_seconds
    while httpx.get(f"{server}/metadata").json()["champion"]["model_version"] != new:
        assert time.monotonic() < deadline, "an API worker still serves the old version"
        time.sleep(0.2)


def test_with_an_api_key_shadow_mode_and_a_canary(
    serving_world: ServingWorld, tmp_path: Path, columns: list[str], dataset
) -> None:
    """Key set: 401 without it, probes open. Shadow on: the challenger's score is logged,
    never returned. A canary started in the registry (no restart): it answers exactly the
    records its hash gives it, with its own scores, each record the same arm on every
    request; a step keeps them and adds more; once rolled back the champion answers all."""
    registry = serving_world.registry()
    champion = registry.alias_version(CHAMPION)
    other = next(v for v in ("1", "2") if v != champion)  # the other family's model
    challenger = registry.register(*_uri_and_run(registry, other), {})
    params = serving_world.write_params(
        "params-shadow.yaml", shadow=True, prediction_log="shadow.sqlite"
    )
    key = {"x-api-key": "s3cret"}
    frame = serving_world.test_records.iloc[:200]
    records = _records(frame, columns)
    offline = {v: load_version(registry, v).scorer.score_records(records) for v in
               (champion, challenger)}  # fmt: skip
    with bento_server(params, tmp_path, LOOPLINE_API_KEY="s3cret") as url:
        few = {"records": records[:5]}
        assert httpx.post(f"{url}/predict", json=few).status_code == 401
        assert httpx.get(f"{url}/healthz").status_code == 200
        response = httpx.post(f"{url}/predict", json=few, headers=key)
        assert response.status_code == 200
        assert "shadow" not in response.text
        logged = read_predictions(serving_world.root / "shadow.sqlite")
        assert set(logged["shadow_version"]) == {challenger}
        np.testing.assert_allclose(logged["shadow_probability"], offline[challenger][:5],
                                   rtol=1e-5)  # float32 trees, another batch size  # fmt: skip
        assert (logged["model_version"] == champion).all()
        assert (logged["arm"] == "champion").all()

        def answered_by_canary(share: float) -> np.ndarray:
            return _answered_by_canary(url, key, records, offline, (champion, challenger), share)

        registry.start_canary(challenger, faced=champion, share=0.3, reason="test", evidence={})
        at_30 = answered_by_canary(0.3)
        expected = registry.canary().answers(
            cols.from_records(records, dataset.record_fields()), dataset.key_columns
        )
        np.testing.assert_array_equal(at_30, expected)
        assert 0.15 < at_30.mean() < 0.45
        registry.decide_canary(registry.canary(), "step", "test", {}, share=0.6)
        at_60 = answered_by_canary(0.6)
        assert not (at_30 & ~at_60).any()
        assert at_60.sum() > at_30.sum()
        registry.decide_canary(registry.canary(), "rollback", "test", {})
        assert not answered_by_canary(0.0).any()

        logged = read_predictions(serving_world.root / "shadow.sqlite").iloc[5:]
        in_canary = logged["arm"] == "canary"
        assert (logged.loc[in_canary, "model_version"] == challenger).all()
        assert (logged.loc[in_canary, "shadow_version"] == champion).all()
        assert (logged.loc[~in_canary, "model_version"] == champion).all()
        assert logged["shadow_probability"].between(0, 1).all()
        assert logged["challenger_ms"].gt(0).all()
        assert logged["challenger_error"].isna().all()


def _answered_by_canary(
    url: str, headers: dict, records: list[dict], offline: dict, versions: tuple, share: float
) -> np.ndarray:
    """Send every record twice once `share` is served; which ones the canary answered.

    Each answer must be its model's own offline score, and each record the same arm twice.
    """
    champion, challenger = versions
    _until_every_worker_serves(url, headers, share)
    seen = []
    for _ in range(2):
        answers = []
        for start in range(0, len(records), 100):
            body = {"records": records[start : start + 100]}
            reply = httpx.post(f"{url}/predict", json=body, headers=headers, timeout=30)
            assert reply.status_code == 200, reply.text
            answers += reply.json()["predictions"]
        by_canary = np.array([p["model_version"] == challenger for p in answers])
        for answer, mine, theirs, canary in zip(
            answers, offline[champion], offline[challenger], by_canary, strict=True
        ):
            assert answer["probability"] == pytest.approx(theirs if canary else mine, rel=1e-5)
        seen.append(by_canary)
    np.testing.assert_array_equal(*seen)
    return seen[0]


def _until_every_worker_serves(url: str, headers: dict, share: float) -> None:
    """Wait until ten /metadata answers in a row (any worker) show the canary at `share`."""
    deadline, in_a_row = time.monotonic() + 30, 0
    while in_a_row < 10:
        assert time.monotonic() < deadline, f"the workers did not all serve share {share}"
        canary = httpx.get(f"{url}/metadata", headers=headers).json()["canary"]
        in_a_row = in_a_row + 1 if (canary["share"] if canary else 0.0) == share else 0
        time.sleep(0.05)


def _uri_and_run(registry, version: str) -> tuple[str, str]:
    """Model URI and run of an existing version (to register a copy as the challenger)."""
    source = registry.client.get_model_version(registry.name, version)
    return source.source, source.run_id


def test_bentoml_build_makes_a_bento_with_the_service_and_library(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bentoml", "build", "-f", "serving/bentofile.yaml", "."],
        cwd=ROOT, env=tool_env(BENTOML_HOME=str(tmp_path)), capture_output=True, text=True,
        timeout=300, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    bento = next((tmp_path / "bentos" / "loopline").glob("*/bento.yaml")).parent
    assert (bento / "src" / "serving" / "service.py").is_file()
    assert (bento / "src" / "src" / "loopline" / "serving" / "schema.py").is_file()
    assert "/predict" in (bento / "apis" / "openapi.yaml").read_text()
