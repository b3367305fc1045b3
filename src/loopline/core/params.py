"""Typed, frozen views of params.yaml: one model per pipeline section.

params.yaml is parsed once into `Params`. It is the only source of every value: these
models declare types and bounds but no defaults, so a missing key and an unknown key
(a typo) both fail at start instead of silently using something else. Functions receive
the section they need (`params.featurize`), never the raw dict.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from loopline.core.errors import ConfigError


class Section(BaseModel):
    """Base for every params section: immutable, and unknown keys are an error."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class PathsParams(Section):
    """Where each stage reads and writes, relative to the project root."""

    data: Path
    data_dvc: Path
    validation: Path
    features: Path
    models: Path
    evaluation: Path
    registration: Path
    metrics: Path
    replay: Path


class DatasetParams(Section):
    """Which dataset is used, and its own settings (checked by the dataset module)."""

    name: str
    settings: dict[str, Any] = Field(default_factory=dict)


class ValidateParams(Section):
    """Knobs of the validate stage (the rules themselves live in the data contract)."""

    min_rows: dict[str, int]
    examples_per_failure: int = Field(ge=0, le=50)


class DateWindow(Section):
    """An inclusive range of calendar days."""

    start: dt.date
    end: dt.date

    @model_validator(mode="after")
    def _ordered(self) -> DateWindow:
        if self.end < self.start:
            raise ValueError(f"window ends ({self.end}) before it starts ({self.start})")
        return self

    def __str__(self) -> str:
        return f"{self.start}..{self.end}"

    @classmethod
    def parse(cls, text: str) -> DateWindow:
        """`2013-01-01..2013-04-30` (its `str`, as tagged on a model version) back again."""
        start, end = text.split("..")
        return cls(start=start, end=end)


class SplitParams(Section):
    """Time-based split: train, then validation, then test, in that order, no overlap."""

    train: DateWindow
    valid: DateWindow
    test: DateWindow

    @model_validator(mode="after")
    def _chronological(self) -> SplitParams:
        if not self.train.end < self.valid.start:
            raise ValueError(f"train {self.train} must end before valid {self.valid} starts")
        if not self.valid.end < self.test.start:
            raise ValueError(f"valid {self.valid} must end before test {self.test} starts")
        return self

    def windows(self) -> dict[str, DateWindow]:
        """The three windows by split name, in time order."""
        return {"train": self.train, "valid": self.valid, "test": self.test}


class FractionSplit(Section):
    """Random split for a dataset without event time: seeded, stratified by the target.

    Fractions adding up to less than 1 leave the rest out of all three, as date windows
    leave later months out: those examples play future production traffic (the replay).
    """

    train: float = Field(gt=0.0, lt=1.0)
    valid: float = Field(gt=0.0, lt=1.0)
    test: float = Field(gt=0.0, lt=1.0)

    @model_validator(mode="after")
    def _whole(self) -> FractionSplit:
        total = self.train + self.valid + self.test
        if total > 1.0 + 1e-9:
            raise ValueError(f"train + valid + test fractions add up to {total:g}, over 1")
        return self

    def fractions(self) -> dict[str, float]:
        """The three fractions by split name."""
        return {"train": self.train, "valid": self.valid, "test": self.test}


class KeyedSplit(Section):
    """Each example's split named by its key, in a file: what a retrain by arrival writes.

    `keys_file` is a parquet file of the dataset's key columns and a `split` column
    (`train`, `valid` or `test`); examples it does not list are left out. (Not `keys`: a
    model with an attribute of that name passes for a mapping with Prefect, which walks
    task parameters.) `judged_arrivals` is the arrival-time span (`first..last`, ISO) of
    the test rows, the newest labeled arrivals, tagged on the version as its test window.
    """

    keys_file: Path
    judged_arrivals: str


class FeaturizeParams(Section):
    """Knobs of the featurize stage."""

    # date windows; fractions (a dataset without time); or a retrain's split by key
    split: SplitParams | FractionSplit | KeyedSplit
    history_smoothing: float = Field(ge=0.0)
    min_category_count: int = Field(ge=1)
    clip_quantiles: tuple[float, float]

    @field_validator("clip_quantiles")
    @classmethod
    def _quantiles_ordered(cls, value: tuple[float, float]) -> tuple[float, float]:
        low, high = value
        if not 0.0 <= low < high <= 1.0:
            raise ValueError(f"clip_quantiles must satisfy 0 <= low < high <= 1, got {value}")
        return value


class MlflowParams(Section):
    """Where runs, models and the registry live (embedded defaults; a server URI works too)."""

    tracking_uri: str
    artifact_root: Path
    experiment: str


class EvaluateParams(Section):
    """Which trained families compete, and plot resolution."""

    candidates: tuple[str, ...] = Field(min_length=1)  # family names (checked by the Workspace)
    curve_points: int = Field(ge=10)


class RegistryParams(Section):
    """The registered model and the rule that decides promotion to `champion`."""

    model_name: str
    primary_metric: Literal["roc_auc", "pr_auc"]
    floors: dict[Literal["roc_auc", "pr_auc"], float]
    min_pr_auc_lift: float = Field(ge=1)  # PR-AUC at least this times the window's positive rate
    margin: float  # negative: prefer the fresher model unless it is worse by more than this
    min_window_rows: int = Field(ge=1)
    bootstrap_samples: int = Field(ge=50)
    confidence: float = Field(gt=0.5, lt=1)
    slice_min_rows: int = Field(ge=1)
    slice_max_regression: float = Field(ge=0)
    latency_budget_ms_per_1000: float = Field(gt=0)
    size_budget_mb: float = Field(gt=0)
    dry_run: bool
    ledger: str  # a JSON-lines file (path), or a database URL (team mode)
    cards: Path
    lock_wait_s: float = Field(gt=0)
    lock_lease_s: float = Field(gt=0)


class ServeParams(Section):
    """The BentoML service: batching, limits, hot swap, shadow scoring, prediction log."""

    host: str
    port: int = Field(ge=1, le=65535)
    workers: int = Field(ge=1, le=64)
    batching: bool
    max_batch_size: int = Field(ge=2)
    max_latency_ms: int = Field(ge=1)
    max_records_per_request: int = Field(ge=1)
    max_body_bytes: int = Field(ge=1024)
    client_timeout_s: float = Field(gt=0, le=300)
    max_open_requests: int = Field(ge=1)
    max_connections: int = Field(ge=1)
    max_in_flight: int = Field(ge=1)
    retry_after_s: int = Field(ge=1)
    poll_seconds: float = Field(gt=0)
    shadow: bool
    prediction_log: str  # a SQLite file (path) or a database URL
    log_commit_delay_ms: float = Field(ge=0, le=1000)
    log_durability: Literal["process", "power"]
    metrics: bool
    access_log: bool
    tracing: bool
    api_key_env: str


class JobsParams(Section):
    """Asynchronous prediction jobs (POST /jobs): where they live, how large, how they run."""

    store: str  # a SQLite file (path) or a database URL
    max_records: int = Field(ge=1)
    max_body_bytes: int = Field(ge=1024)
    upload_timeout_s: float = Field(gt=0, le=3600)
    chunk_rows: int = Field(ge=1)
    lease_s: float = Field(gt=0)
    sweep_minutes: int = Field(ge=1)


class TrafficChecks(Section):
    """Data-quality limits on a live batch, checked before drift (loopline.monitoring.traffic)."""

    outage_null_fraction: float = Field(gt=0, le=1)
    min_day_rows: int = Field(ge=1)
    category_share: float = Field(gt=0, lt=1)
    category_drop: float = Field(gt=0, lt=1)
    duplicate_share: float = Field(ge=0, lt=1)
    rule_break_share: float = Field(ge=0, lt=1)  # records breaking a contract row rule


class DriftTests(Section):
    """Per-field drift tests that know the batch's size (loopline.monitoring.drift)."""

    effect_limit: float = Field(gt=0)  # a distance that matters, at any batch size
    false_alarm: float = Field(gt=0, lt=0.5)  # per field, on batches of the reference itself
    min_expected: float = Field(gt=0)  # categories expected fewer times in a batch are pooled
    noise_draws: int = Field(ge=50)  # simulated batches per field that set the noise limit


class MonitorParams(Section):
    """Drift and quality monitoring of production batches, and when to ask for a retrain."""

    workspace: str  # an Evidently workspace folder, or the URL of an Evidently UI service
    reports: Path
    state: str  # a SQLite file (path) or a database URL
    project: str
    reference_rows: int = Field(ge=100)
    report_rows: int = Field(ge=100)  # rows of a batch its Evidently report is drawn from
    chunk_rows: int = Field(ge=1000)  # rows read from the log at a time
    readers: int = Field(default=2, ge=1)  # windows of a SQLite log read at once (threads)
    engine: Literal["local", "dask"] = "local"  # where a batch is read (monitoring/reading.py)
    scheduler: str | None = None  # dask: a scheduler address; None: a LocalCluster of ...
    dask_workers: int = Field(default=2, ge=1)  # ... this many worker processes
    min_batch_rows: int = Field(ge=1)
    drift_share_limit: float = Field(gt=0, le=1)
    drift: DriftTests
    quality_metric: Literal["roc_auc", "pr_auc"]
    quality_drop_limit: float = Field(gt=0)
    k: int = Field(ge=1)
    n: int = Field(ge=1)
    # No new trigger within this long after one: days of data for batches cut by event day
    # (a dataset with a time column), batches for batches cut by arrival (one without).
    cooldown_days: int | None = Field(default=None, ge=0)
    cooldown_batches: int | None = Field(default=None, ge=0)
    interval_minutes: int = Field(ge=1)
    traffic: TrafficChecks

    @model_validator(mode="after")
    def _k_of_n(self) -> MonitorParams:
        if self.k > self.n:
            raise ValueError(f"k ({self.k}) cannot exceed n ({self.n})")
        return self


class Guardrails(Section):
    """Limits that stop a canary at once, on its traffic since its step began (no labels)."""

    min_requests: int = Field(ge=1)  # requests in the step before a rate is judged
    max_error_rate: float = Field(ge=0, lt=1)  # challenger failures and timeouts per request
    timeout_ms: float = Field(gt=0)  # a challenger scoring slower than this is a timeout
    max_p99_ratio: float = Field(ge=1)  # the challenger's p99 scoring time / the champion's
    p99_floor_ms: float = Field(ge=0)  # ... tripped only above this many ms
    srm_alpha: float = Field(gt=0, lt=0.5)  # sample-ratio check: routed vs planned share
    max_positive_rate_ratio: float = Field(
        gt=1
    )  # predicted positives vs the champion's, either way


class CanaryParams(Section):
    """Online experiments: a challenger answering a share of live traffic, judged on labels.

    `release: canary` sends a challenger that passes the gate into a canary (the default);
    `direct` makes it champion at once, as before canaries.
    """

    release: Literal["canary", "direct"]
    steps: list[float] = Field(min_length=1)  # shares of records the canary answers, in turn
    loss: Literal["log_loss", "brier"]  # the per-record loss the arms are compared on
    alpha: float = Field(gt=0, lt=0.5)  # the always-valid test's error level (two-sided)
    planned_pairs: int = Field(ge=10)  # where the confidence sequence is tightest
    min_pairs: int = Field(ge=2)  # labeled pairs before the test may decide anything
    max_pairs: int = Field(ge=2)  # undecided after this many: the champion stays
    max_days: float = Field(gt=0)  # ... or after this long (wall clock) since it began
    min_step_records: int = Field(ge=1)  # records a step's canary answered before moving on
    guardrails: Guardrails

    @model_validator(mode="after")
    def _steps_rise(self) -> CanaryParams:
        shares = self.steps
        if any(not 0 < s <= 1 for s in shares) or sorted(set(shares)) != shares:
            raise ValueError(f"steps must rise within (0, 1], not {shares}")
        if self.max_pairs < self.min_pairs:
            raise ValueError(f"max_pairs ({self.max_pairs}) is below min_pairs ({self.min_pairs})")
        return self


class RetrainParams(Section):
    """How a retrain moves the windows, and its weekly schedule.

    A dataset with a time column moves date windows (`valid_days`, `test_days`); one
    without judges on its newest `test_arrivals` labeled arrivals.
    """

    cron: str
    valid_days: int | None = Field(default=None, ge=1)
    test_days: int | None = Field(default=None, ge=1)
    test_arrivals: int | None = Field(default=None, ge=1)
    timeout_minutes: int = Field(ge=1)


def required(value: int | None, key: str, why: str) -> int:
    """`value`, or a ConfigError naming the missing `key` and why it is needed."""
    if value is None:
        raise ConfigError(f"{key} is not set; it is needed {why}")
    return value


class PrefectParams(Section):
    """Where flows report and how the loop's deployments are run."""

    api_url: str | None  # None: a local server on 127.0.0.1, started when a command needs one
    work_pool: str | None  # None: `loopline deploy` runs the deployments in its own process


class TeamPorts(Section):
    """Ports of the team servers on `team.host`; 0 picks a free one at start."""

    postgres: int = Field(ge=0, le=65535)
    mlflow: int = Field(ge=0, le=65535)
    prefect: int = Field(ge=0, le=65535)
    evidently: int = Field(ge=0, le=65535)


class TeamParams(Section):
    """`loopline up --profile team`: the shared servers, and the params file it writes."""

    database: str  # "embedded": PostgreSQL from the wheel, in `home`; or a postgresql:// URL
    home: Path  # PostgreSQL data, the Evidently workspace, server logs
    artifacts: str  # MLflow's --artifacts-destination: a folder, or s3://bucket/prefix
    host: str
    ports: TeamPorts
    work_pool: str  # the Prefect process work pool the deployments go to
    workers: int = Field(ge=1, le=16)  # Prefect workers started on this machine
    params_file: Path  # the params file pointing the loop at the servers (written at start)


class Params(Section):
    """The whole of params.yaml."""

    seed: int
    paths: PathsParams
    dataset: DatasetParams
    validate_: ValidateParams = Field(alias="validate")
    featurize: FeaturizeParams
    mlflow: MlflowParams
    # One section per model family, each checked by its family's own params model when a
    # Workspace is made (`loopline.training.families`): a family is a plug-in.
    train: dict[str, dict[str, Any]]
    evaluate: EvaluateParams
    registry: RegistryParams
    serve: ServeParams
    jobs: JobsParams
    monitor: MonitorParams
    canary: CanaryParams
    retrain: RetrainParams
    prefect: PrefectParams
    team: TeamParams

    # Where the values came from, so that a section checked later is named by its line too.
    _source: str = PrivateAttr(default="params")
    _lines: dict[tuple[str, ...], int] = PrivateAttr(default_factory=dict)

    def checked(self, model: type[S], *where: str) -> S:
        """The raw mapping at `where` (e.g. "train", "xgboost") validated by `model`.

        For sections whose model is known only to a plug-in (a model family's params);
        a bad key is a ConfigError naming the file, line and key, as at load.
        """
        raw: Any = self.model_dump(by_alias=True)
        for key in where:
            if not isinstance(raw, dict) or key not in raw:
                raise ConfigError(f"{self._source}: {'.'.join(where)} is not set")
            raw = raw[key]
        try:
            return model.model_validate(raw)
        except ValidationError as error:
            raise ConfigError(_format_errors(error, self._source, self._lines, where)) from None


S = TypeVar("S", bound=Section)


def _format_errors(
    error: ValidationError,
    source: str,
    lines: dict[tuple[str, ...], int],
    prefix: tuple[str, ...] = (),
) -> str:
    """One line per bad key: `params.yaml:149: section.key: what is wrong`."""
    out = []
    for item in error.errors():
        loc = (*prefix, *(str(part) for part in item["loc"]))
        where = ".".join(loc) or "(top level)"
        known = [loc[:n] for n in range(len(loc), 0, -1) if loc[:n] in lines]
        at = f"{source}:{lines[known[0]]}" if known else source
        out.append(f"{at}: {where}: {item['msg']}")
    return "\n".join(out)


def parse_params(
    raw: dict[str, Any], source: str = "params", lines: dict[tuple[str, ...], int] | None = None
) -> Params:
    """Validate a params mapping; ConfigError has a line per bad key (with its file line)."""
    try:
        params = Params.model_validate(raw)
    except ValidationError as error:
        raise ConfigError(_format_errors(error, source, lines or {})) from None
    params._source, params._lines = source, dict(lines or {})
    return params


def _key_lines(node: yaml.Node, prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], int]:
    """The 1-based line of every mapping key in a composed YAML document, by key path."""
    found: dict[tuple[str, ...], int] = {}
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            path = (*prefix, str(key.value))
            found[path] = key.start_mark.line + 1
            found.update(_key_lines(value, path))
    return found


PARAMS_ENV = "LOOPLINE_PARAMS"


def params_file(path: Path | None = None) -> Path:
    """`path`, else the file `LOOPLINE_PARAMS` names, else params.yaml in this folder.

    `loopline run --params` and `bentoml serve` set the variable for their children, so
    the stages of `dvc repro` and the service read the file the user gave.
    """
    return path or Path(os.environ.get(PARAMS_ENV, "params.yaml"))


def read_params_yaml(path: Path) -> dict[str, Any]:
    """The raw mapping of a params file (ConfigError if it is missing or not YAML)."""
    return read_params_source(path)[0]


def read_params_source(path: Path) -> tuple[dict[str, Any], dict[tuple[str, ...], int]]:
    """A params file's raw mapping and the line of every key in it."""
    if not path.is_file():
        raise ConfigError(f"{path} not found: run from the project root or pass --params")
    text = path.read_text()
    try:
        raw = yaml.safe_load(text) or {}
        document = yaml.compose(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise ConfigError(f"{where}: not valid YAML ({problem})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} must hold a mapping of sections, got {type(raw).__name__}")
    return raw, (_key_lines(document) if document is not None else {})


def load_params(path: Path = Path("params.yaml")) -> Params:
    """Read and validate params.yaml; a syntax error or bad key is named with its line.

    Locations stay as written; `loopline.workspace.Workspace.load` also resolves them.
    """
    raw, lines = read_params_source(path)
    return parse_params(raw, source=str(path), lines=lines)
