"""Running the pipeline that dvc.yaml declares.

By `dvc repro`, as a DVC experiment, or the stage commands one by one (for a dataset DVC
does not track).
"""

from __future__ import annotations

import json
import shlex
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from loopline.core.errors import LooplineError
from loopline.core.params import PARAMS_ENV, read_params_yaml
from loopline.infra.processes import python_module


def stage_commands(
    dvc_yaml: Path, params_file: Path, last: str | None = None
) -> list[tuple[str, str]]:
    """(stage name, command line) of dvc.yaml's stages in file order, foreach expanded.

    A `foreach` over a params key (`${evaluate.candidates}`) takes that key's value from
    `params_file`, as DVC takes it from params.yaml. The order in dvc.yaml is already one
    that DVC's graph allows; `last` stops after that stage. This is how a dataset that
    DVC does not track runs the same pipeline.
    """
    stages = yaml.safe_load(dvc_yaml.read_text())["stages"]
    names = list(stages)
    if last is not None and last not in names:
        raise LooplineError(f"no stage {last!r} in {dvc_yaml}; stages: {names}")
    values = read_params_yaml(params_file)
    commands = []
    for name in names[: names.index(last) + 1 if last else None]:
        definition = stages[name]
        command = definition["do"]["cmd"] if "foreach" in definition else definition["cmd"]
        for item in _items(definition.get("foreach", [None]), values):
            line = command.replace("${item}", str(item)) if item is not None else command
            commands.append((name, line))
    return commands


def _items(foreach: list | str, values: Mapping[str, Any]) -> list:
    """A foreach list, or the list a `${dotted.key}` names in the params."""
    if not isinstance(foreach, str):
        return foreach
    node: Any = values
    for part in foreach.removeprefix("${").removesuffix("}").split("."):
        node = node[part]
    return list(node)


def set_arguments(overrides: Mapping[str, Any]) -> list[str]:
    """`-S key=value` arguments of `dvc exp run` for dotted-key overrides.

    Values are JSON-quoted: DVC parses `-S` values as YAML, which would turn a bare date
    into a date object (rejected) and read some paths as something else.
    """
    return [arg for key, value in overrides.items() for arg in ("-S", f"{key}={json.dumps(value)}")]


def run_experiment(
    name: str,
    overrides: Mapping[str, Any],
    root: Path,
    env: Mapping[str, str],
    timeout_s: float,
) -> str:
    """`dvc exp run --temp` in `root` with these overrides; returns DVC's output.

    Raises LooplineError with DVC's last output if the experiment fails.
    """
    command = python_module("dvc", "exp", "run", "--temp", "--name", name,
                            *set_arguments(overrides))  # fmt: skip
    result = subprocess.run(
        command, cwd=root, env=dict(env), capture_output=True, text=True, timeout=timeout_s,
        check=False,
    )  # fmt: skip
    if result.returncode != 0:
        tail = (result.stdout + result.stderr)[-4000:]
        raise LooplineError(f"dvc exp run {name} failed (exit {result.returncode}):\n{tail}")
    return result.stdout


def run_stages(root: Path, env: Mapping[str, str], timeout_s: float) -> None:
    """Run dvc.yaml's stage commands in `root`, in order, all within `timeout_s`.

    `env` names the params file (`LOOPLINE_PARAMS`). Raises LooplineError with the failed
    stage's last output.
    """
    deadline = time.monotonic() + timeout_s
    for name, line in stage_commands(root / "dvc.yaml", Path(env[PARAMS_ENV])):
        result = subprocess.run(
            shlex.split(line), cwd=root, env=dict(env), capture_output=True, text=True,
            timeout=max(deadline - time.monotonic(), 1), check=False,
        )  # fmt: skip
        if result.returncode != 0:
            tail = (result.stdout + result.stderr)[-4000:]
            raise LooplineError(f"stage {name} ({line}) failed (exit {result.returncode}):\n{tail}")
