"""params.yaml parses into strict, frozen settings; mistakes fail loudly at start."""

from __future__ import annotations

import pytest

from loopline.core.errors import ConfigError
from loopline.core.params import Params, load_params, parse_params
from tests.conftest import ROOT, small_params_dict


def test_real_params_load_with_every_section(params: Params) -> None:
    assert params.dataset.name == "nycflights13"
    assert params.validate_.min_rows["flights"] > 0
    assert list(params.featurize.split.windows()) == ["train", "valid", "test"]


def test_unknown_key_is_rejected_with_its_location() -> None:
    raw = small_params_dict()
    raw["featurize"]["histroy_smoothing"] = 10
    with pytest.raises(ConfigError, match=r"featurize\.histroy_smoothing"):
        parse_params(raw)


def test_overlapping_split_windows_are_rejected() -> None:
    raw = small_params_dict()
    raw["featurize"]["split"]["valid"]["start"] = "2013-04-15"
    with pytest.raises(ConfigError, match="must end before valid"):
        parse_params(raw)


def test_window_ending_before_it_starts_is_rejected() -> None:
    raw = small_params_dict()
    raw["featurize"]["split"]["test"] = {"start": "2013-06-30", "end": "2013-06-01"}
    with pytest.raises(ConfigError, match="ends"):
        parse_params(raw)


def test_params_are_frozen(params: Params) -> None:
    with pytest.raises(ValueError, match="frozen"):
        params.seed = 1  # type: ignore[misc]


def test_missing_file_names_the_path(tmp_path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.yaml not found"):
        load_params(tmp_path / "nope.yaml")


def test_dates_are_quoted_in_params_yaml_because_dvc_cannot_read_yaml_dates() -> None:
    text = (ROOT / "params.yaml").read_text()
    assert 'start: "2013-01-01"' in text


def _params_with(tmp_path, old: str, new: str):
    text = (ROOT / "params.yaml").read_text()
    assert old in text
    path = tmp_path / "params.yaml"
    path.write_text(text.replace(old, new, 1))
    line = text[: text.index(old)].count("\n") + 1
    return path, line


def test_a_yaml_syntax_error_is_one_line_naming_file_and_line(tmp_path) -> None:
    path, line = _params_with(tmp_path, "  workers: 2 ", "  workers: [2 ")
    with pytest.raises(ConfigError) as caught:
        load_params(path)
    message = str(caught.value)
    assert message.startswith(f"{path}:{line + 1}:")  # YAML notices on the next line
    assert "not valid YAML" in message
    assert "\n" not in message


def test_a_misspelled_key_is_named_with_its_line(tmp_path) -> None:
    path, line = _params_with(tmp_path, "    min_day_rows: 50", "    min_day_rowz: 50")
    with pytest.raises(ConfigError) as caught:
        load_params(path)
    assert str(caught.value).splitlines() == [
        f"{path}:{line - 3}: monitor.traffic.min_day_rows: Field required",  # its section's line
        f"{path}:{line}: monitor.traffic.min_day_rowz: Extra inputs are not permitted",
    ]
