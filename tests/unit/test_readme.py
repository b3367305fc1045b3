"""What the README points a newcomer at exists."""

from __future__ import annotations

import re

from tests.conftest import ROOT

# A path in backticks under one of the code folders (monitoring/ holds what runs write),
# without placeholders or globs.
PATH = re.compile(r"`((?:src|tests|pipelines|serving|bench|scripts)/[^`\s<>*{}]+)`")


def test_every_project_path_the_readme_names_exists() -> None:
    named = set(PATH.findall((ROOT / "README.md").read_text()))
    assert named, "the README names no path"
    missing = sorted(path for path in named if not (ROOT / path.split("::")[0]).exists())
    assert not missing, f"the README names paths that do not exist: {missing}"
