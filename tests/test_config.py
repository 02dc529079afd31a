import dataclasses
import importlib

import pytest
import yaml
from helpers import REPO

from cloudcli.config import FoldConfig, Params, build, load_params
from cloudcli.errors import ConfigError


def write(tmp_path, params: dict):
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def repo_params() -> dict:
    return yaml.safe_load((REPO / "params.yaml").read_text())


def test_repository_params_load() -> None:
    params = load_params(REPO / "params.yaml")
    assert params.data.image_size == (1400, 2100) and params.data.score_size == (350, 525)
    assert isinstance(params.fold, FoldConfig)
    with pytest.raises(dataclasses.FrozenInstanceError):
        params.fold.seed = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda p: p["fold"].update(n_split=5), r"unknown key 'fold.n_split'; did you mean 'fold.n_splits'\?"),
        (lambda p: p.update(folds={}), r"unknown key 'folds'; did you mean 'fold'"),
        (lambda p: p["fold"].pop("seed"), r"missing key 'fold.seed'"),
        (lambda p: p["preprocess"].update(workers="two"), r"preprocess.workers must be an integer, got 'two'"),
        (lambda p: p["preprocess"].update(workers=True), r"preprocess.workers must be an integer"),
        (lambda p: p["data"].update(image_size=[1400]), r"data.image_size must be a list of 2 values"),
        (lambda p: p["data"].update(image_size=[1400, "x"]), r"data.image_size\[1\] must be an integer"),
        (lambda p: p["data"].update(raw=3), r"data.raw must be a string"),
        (
            lambda p: p["preprocess"].update(image_size=[100, 288]),
            r"preprocess.image_size must be positive multiples of 32",
        ),
        (lambda p: p["fold"].update(n_splits=1), r"fold.n_splits must be >= 2, got 1"),
        (lambda p: p.update(fold=[1, 2]), r"fold. must be a mapping|fold must be a mapping"),
    ],
)
def test_bad_params_name_the_key(tmp_path, change, message: str) -> None:
    params = repo_params()
    change(params)
    path = write(tmp_path, params)
    with pytest.raises(ConfigError, match=message) as info:
        load_params(path)
    assert str(info.value).startswith(str(path))


def test_float_written_as_string_gets_a_hint() -> None:
    @dataclasses.dataclass(frozen=True)
    class Train:
        lr: float

    assert build(Train, {"lr": 1}, "train.").lr == 1.0  # an int is a fine float
    with pytest.raises(ConfigError, match=r"train.lr must be a number, got '5e-4'.*write 5.0e-4"):
        build(Train, {"lr": "5e-4"}, "train.")


def test_missing_file_and_bad_yaml(tmp_path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        load_params(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("fold: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_params(bad)


def test_dvc_stages_declare_exactly_the_sections_they_read() -> None:
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    for name, stage in stages.items():
        module = importlib.import_module(f"cloudcli.stages.{name}")
        assert tuple(stage["params"]) == module.PARAMS, name
        assert set(module.PARAMS) <= {f.name for f in dataclasses.fields(Params)}
