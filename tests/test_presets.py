"""The packaged defaults and presets, their merge, and `cloudcli init`."""

from __future__ import annotations

import pytest
from helpers import REPO, cloudcli

from cloudcli.config import ConfigError, load_params, presets, read_yaml, tta_warnings
from cloudcli.config.presets import merge, params_text, preset_names, preset_params

PRESETS = ("1st_place", "3rd_place", "chips", "demo_5fold", "image_mask")


def test_packaged_defaults_are_the_repository_params_byte_for_byte() -> None:
    # edit params.yaml and cloudcli/config/defaults.yaml together: `cloudcli init` writes the latter
    assert (REPO / "cloudcli/config/defaults.yaml").read_bytes() == (REPO / "params.yaml").read_bytes()
    assert params_text(None) == (REPO / "params.yaml").read_text()


@pytest.mark.parametrize("name", PRESETS)
def test_every_preset_loads_as_the_defaults_with_its_values(tmp_path, name: str) -> None:
    assert preset_names() == sorted(PRESETS)
    defaults = read_yaml((REPO / "params.yaml").read_text())
    preset = read_yaml(presets.preset_text(name))
    expected = merge(defaults, preset)
    assert preset_params(name) == expected
    path = tmp_path / "params.yaml"
    path.write_text(params_text(name))
    params = load_params(path)
    assert read_yaml(path.read_text()) == expected
    assert tta_warnings(params.augment, params.infer) == []  # training shows every TTA view
    assert "# decides empty vs non-empty" in path.read_text()  # the line merge kept the defaults' comments


def paths(tree: dict, where: tuple = ()) -> list[tuple]:
    """Every key of a nested mapping, as the keys from the top."""
    return [p for k, v in tree.items() for p in [(*where, k), *(paths(v, (*where, k)) if isinstance(v, dict) else [])]]


def without(tree: dict, path: tuple) -> dict:
    if len(path) == 1:
        return {k: v for k, v in tree.items() if k != path[0]}
    return {**tree, path[0]: without(tree[path[0]], path[1:])}


@pytest.mark.parametrize("name", PRESETS)
def test_presets_hold_only_what_differs(name: str) -> None:
    defaults = read_yaml((REPO / "params.yaml").read_text())
    preset = read_yaml(presets.preset_text(name))
    merged = merge(defaults, preset)
    idle = [".".join(p) for p in paths(preset) if merge(defaults, without(preset, p)) == merged]
    assert idle == [], "keys that change nothing: leave them to the defaults"


def test_merge_replaces_losses_and_lists_and_merges_sections_models_and_overrides(tmp_path, monkeypatch) -> None:
    preset = """# a test preset
models:
  seg1:
    loss: {lovasz: 1.0}       # replaced whole: a loss is a weighted sum, not overrides
  seg2:
    train: {restart_epochs: 5}
  seg3:
    role: seg2
    loss: {dice: 1.0}
train:
  epochs: 3                   # three
cv:
  models: [seg1, seg2, seg2_unet, seg3, classifier]
"""
    monkeypatch.setattr(presets, "preset_text", lambda name: preset)
    params = preset_params("test")
    assert params["models"]["seg1"] == {"role": "seg1", "loss": {"lovasz": 1.0}}
    assert params["models"]["seg2"]["train"] == {"scheduler": "cosine_restarts", "restart_epochs": 5}
    assert params["models"]["seg3"] == {"role": "seg2", "loss": {"dice": 1.0}}
    assert params["train"]["epochs"] == 3 and params["train"]["batch_size"] == 8  # the defaults' value
    assert params["cv"]["models"] == ["seg1", "seg2", "seg2_unet", "seg3", "classifier"]
    text = params_text("test")
    assert text.startswith("# a test preset\n#\n# Every tunable value")
    assert "  epochs: 3                   # three\n" in text and "# CPU demo; GPU runs" not in text
    assert "    train: {scheduler: cosine_restarts, restart_epochs: 5}\n" in text
    assert "  seg1_pl:" in text.split("  seg3:")[0]  # a new model goes at the end of `models`
    assert read_yaml(text) == params
    (tmp_path / "params.yaml").write_text(text)
    assert load_params(tmp_path / "params.yaml").models["seg1"].loss == {"lovasz": 1.0}

    flow = "train: {epochs: 3}\n"  # a layout the line merge does not follow: a plain dump, same values
    monkeypatch.setattr(presets, "preset_text", lambda name: flow)
    assert read_yaml(params_text("test")) == preset_params("test")


def test_unknown_preset_lists_the_choices() -> None:
    with pytest.raises(
        ConfigError, match=r"unknown preset 'chip'; choose from 1st_place, 3rd_place, chips, demo_5fold, image_mask"
    ):
        preset_params("chip")


def test_init_writes_the_defaults_or_a_preset_and_never_overwrites_unasked(tmp_path) -> None:
    out = cloudcli("init", cwd=tmp_path).stdout
    assert out.splitlines()[0] == "params.yaml: the defaults"
    assert (tmp_path / "params.yaml").read_bytes() == (REPO / "params.yaml").read_bytes()
    # the folder the fold stage depends on (data.exclude's lists), as the repository has it
    assert (tmp_path / "labels/README.md").read_bytes() == (REPO / "labels/README.md").read_bytes()
    (tmp_path / "labels/exclude.txt").write_text("a\n")

    again = cloudcli("init", "--preset", "chips", cwd=tmp_path, check=False)
    assert again.returncode == 1 and "Traceback" not in again.stderr
    assert again.stderr.strip() == "error: --out params.yaml: already exists; pass --force to replace it"
    assert (tmp_path / "params.yaml").read_bytes() == (REPO / "params.yaml").read_bytes()

    cloudcli("init", "--preset", "chips", "--force", cwd=tmp_path)
    assert (tmp_path / "params.yaml").read_text() == params_text("chips")
    assert load_params(tmp_path / "params.yaml").data.kind == "chips"

    unknown = cloudcli("init", "--preset", "tiles", "--out", "p.yaml", cwd=tmp_path, check=False)
    assert unknown.returncode == 1 and "Traceback" not in unknown.stderr
    assert "unknown preset 'tiles'; choose from 1st_place, 3rd_place, chips, demo_5fold, image_mask" in unknown.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels", "params.yaml"]
    assert (tmp_path / "labels/exclude.txt").read_text() == "a\n"  # an existing folder is left as it is
    help_text = cloudcli("init", "--help", cwd=tmp_path).stdout
    assert all(name in help_text for name in PRESETS)


def test_defaults_and_presets_are_package_data() -> None:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    setuptools = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert setuptools["package-data"]["cloudcli.config"] == ["defaults.yaml", "presets/*.yaml"]
