"""The service's own requirements stay in step with the project's tested constraints."""

from __future__ import annotations

import re

import yaml

from tests.conftest import ROOT


def _pins(text: str) -> dict[str, str]:
    pins = {}
    for line in text.splitlines():
        match = re.match(r"^([A-Za-z0-9_.\\-]+)==([^\\s+;#]+)", line.strip())
        if match:
            pins[match.group(1).lower().replace("_", "-")] = match.group(2)
    return pins


def test_service_requirements_use_the_constraint_versions() -> None:
    service = _pins((ROOT / "serving" / "requirements.txt").read_text())
    constraints = _pins((ROOT / "constraints.txt").read_text())
    assert service, "serving/requirements.txt pins nothing"
    mismatched = {
        name: (v, constraints.get(name))
        for name, v in service.items()
        if constraints.get(name) != v
    }
    assert not mismatched, f"serving/requirements.txt differs from constraints.txt: {mismatched}"


def test_bentofile_packs_the_service_and_the_library() -> None:
    bentofile = yaml.safe_load((ROOT / "serving" / "bentofile.yaml").read_text())
    assert bentofile["service"] == "serving.service:PredictionAPI"
    assert {"serving/*.py", "src/loopline/**/*.py", "params.yaml"} <= set(bentofile["include"])
