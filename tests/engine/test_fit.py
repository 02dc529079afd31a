"""Tiny real training runs on CPU."""

import dataclasses
import json
import os
import signal
import sys
from pathlib import Path

import procs
import pytest
import torch
import yaml
from helpers import cloudcli

from cloudcli.config import load_params, resolve_model
from cloudcli.engine import checkpoint
from cloudcli.stages import train


def run(
    tiny_cache: Path, out: Path, model: str = "seg1", fold: int = 0, network: dict | None = None, **train_changes
) -> dict:
    p = load_params(tiny_cache / "params.yaml")
    spec = resolve_model(model, p.network, p.train, p.models)
    spec = dataclasses.replace(spec, train=dataclasses.replace(spec.train, **train_changes))
    spec = dataclasses.replace(spec, network=dataclasses.replace(spec.network, **(network or {})))
    return train.run(
        spec,
        p.augment,
        tiny_cache / "artifacts/preprocessed",
        tiny_cache / "artifacts/folds.csv",
        fold,
        out / "ckpt",
        out / "live",
        states=out / "states",
    )


def tsv_rows(path: Path) -> int:
    return len(path.read_text().strip().splitlines()) - 1


@pytest.mark.parametrize(("model", "monitor"), [("seg1", "dice"), ("seg2", "dice_pos"), ("classifier", "auc")])
def test_one_tiny_run_per_role(tiny_cache, tmp_path, model: str, monitor: str) -> None:
    summary = run(tiny_cache, tmp_path, model)
    ckpt = tmp_path / "ckpt"
    assert summary["monitor"] == monitor and summary["epochs"] == 2 and 1 <= summary["best_epoch"] <= 2
    assert json.loads((ckpt / "summary.json").read_text()) == json.loads(json.dumps(summary))
    config = json.loads((ckpt / "config.json").read_text())
    assert config["network"]["encoder"] == "resnet18" and "torch" in config["versions"]
    assert config["processes"] == 1
    best = checkpoint.load(ckpt / "best.pt")  # weights_only=True
    assert best["monitor"] == monitor and best["epoch"] == summary["best_epoch"]
    assert sorted(p.name for p in ckpt.iterdir()) == ["best.pt", "config.json", "summary.json"]
    assert not any((tmp_path / "states").iterdir())  # the resume state is gone once the run ends
    assert tsv_rows(tmp_path / "live/plots/metrics/train/loss.tsv") == 2
    assert tsv_rows(tmp_path / f"live/plots/metrics/val/{monitor}.tsv") == 2
    assert (tmp_path / "live/plots/metrics/lr/decoder.tsv").exists()
    samples = json.loads((tmp_path / "live/metrics.json").read_text())["train"]["samples"]
    assert samples == config["n_train"]  # every training image once per epoch
    if model != "classifier":
        n_rows = sum(summary["metrics"]["sums"][4:8])
        assert n_rows == 4 * config["n_valid"]  # every validation (image, class) row once


def test_same_seed_same_metrics(tiny_cache, tmp_path) -> None:
    a, b = run(tiny_cache, tmp_path / "a"), run(tiny_cache, tmp_path / "b")
    assert a["metrics"] == b["metrics"]
    c = run(tiny_cache, tmp_path / "c", seed=7)
    assert c["metrics"] != a["metrics"]


def keep_resume_state(monkeypatch) -> None:
    """The resume folder stays after the run, as if it had been cut after its last epoch."""
    import cloudcli.engine.fit as fit

    monkeypatch.setattr(fit, "drop_state", lambda work: None)


def saved_state(tmp_path: Path, run_name: str = "seg1-fold0") -> Path:
    (state,) = (tmp_path / "states" / run_name).iterdir()
    return state / "last.pt"


def test_training_options_run(tiny_cache, tmp_path, monkeypatch) -> None:
    keep_resume_state(monkeypatch)
    summary = run(
        tiny_cache,
        tmp_path,
        "seg2",
        optimizer="adamw",
        scheduler="onecycle",
        accumulate=2,
        clip_grad=1.0,
        ema=0.9,
        encoder_lr_mult=0.1,
        input_size=(64, 96),  # the cache is 32x64: images and masks are resized on the fly
    )
    assert summary["best_epoch"] >= 1
    assert checkpoint.load(saved_state(tmp_path, "seg2-fold0"))["ema"] is not None
    assert json.loads((tmp_path / "ckpt/config.json").read_text())["input_size"] == [64, 96]


def test_frozen_encoder_stages_keep_their_batchnorm_statistics(tiny_cache, tmp_path) -> None:
    """freeze_encoder_stages: 2 freezes conv1 and bn1 of the resnet18: bn1 keeps its initial running
    statistics (random init: mean 0, var 1) through training, while layer1's BatchNorm learns its own."""
    run(tiny_cache, tmp_path, network={"freeze_encoder_stages": 2}, epochs=1)
    model = checkpoint.load(tmp_path / "ckpt/best.pt")["model"]  # no EMA: the trained weights
    assert json.loads((tmp_path / "ckpt/config.json").read_text())["frozen_encoder_stages"] == ["conv1", "bn1"]
    assert torch.equal(model["encoder.bn1.running_mean"], torch.zeros(64))
    assert torch.equal(model["encoder.bn1.running_var"], torch.ones(64))
    assert not torch.equal(model["encoder.layer1.0.bn1.running_mean"], torch.zeros(64))


def test_changed_settings_start_afresh(tiny_cache, tmp_path, monkeypatch) -> None:
    with monkeypatch.context() as m:
        keep_resume_state(m)
        run(tiny_cache, tmp_path, epochs=1)
    old = saved_state(tmp_path)
    monkeypatch.setenv("CLOUDCLI_RESUME_DIR", str(tmp_path / "states"))
    out = cloudcli(
        "train",
        "--model",
        "seg1",
        "--fold",
        "0",
        "--out",
        str(tmp_path / "ckpt"),
        "--live",
        str(tmp_path / "live"),
        cwd=tiny_cache,
    )
    assert "made with other settings, starting afresh" in out.stderr
    assert "resuming" not in out.stderr and not old.exists()
    assert json.loads((tmp_path / "ckpt/summary.json").read_text())["epochs"] == 2
    assert not any((tmp_path / "states").iterdir())


def test_a_damaged_saved_state_names_the_file_and_how_to_start_afresh(tiny_cache, tmp_path, monkeypatch) -> None:
    with monkeypatch.context() as m:
        keep_resume_state(m)
        run(tiny_cache, tmp_path, epochs=1)
    state = saved_state(tmp_path)
    saved = checkpoint.load(state)
    assert saved["curves"]["plots/metrics/train/loss.tsv"].count("\n") == 2  # the header and epoch 1's row
    state.write_bytes(state.read_bytes()[:1000])  # cut short, as by a full disk
    monkeypatch.setenv("CLOUDCLI_RESUME_DIR", str(tmp_path / "states"))
    args = [
        "train",
        "--model",
        "seg1",
        "--fold",
        "0",
        "--out",
        str(tmp_path / "ckpt"),
        "--live",
        str(tmp_path / "live"),
    ]
    params = yaml.safe_load((tiny_cache / "params.yaml").read_text())
    params["train"]["epochs"] = 1  # the same settings as the saved state
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    out = cloudcli(*args, "--params", str(tmp_path / "params.yaml"), cwd=tiny_cache, check=False)
    assert out.returncode == 1 and "Traceback" not in out.stderr
    error = out.stderr.strip().splitlines()[-1]
    assert f"{state}: damaged training state" in error and "--restart" in error
    again = cloudcli(*args, "--params", str(tmp_path / "params.yaml"), "--restart", cwd=tiny_cache)
    assert "resuming" not in again.stderr and (tmp_path / "ckpt/best.pt").exists()


@pytest.mark.slow
def test_resume_after_kill_ends_where_an_uninterrupted_run_would(tiny_cache, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("CLOUDCLI_RESUME_DIR", str(tmp_path / "states"))
    args = ["--model", "seg1", "--fold", "1", "--params", str(tmp_path / "params.yaml")]
    params = (tiny_cache / "params.yaml").read_text().replace("epochs: 2", "epochs: 5")
    (tmp_path / "params.yaml").write_text(params)
    cloudcli("train", *args, "--out", str(tmp_path / "full"), "--live", str(tmp_path / "full_live"), cwd=tiny_cache)
    cmd = [
        sys.executable,
        "-m",
        "cloudcli",
        "train",
        *args,
        "--out",
        str(tmp_path / "cut"),
        "--live",
        str(tmp_path / "cut_live"),
    ]
    proc = procs.start(cmd, tmp_path / "cut.log", cwd=tiny_cache)
    states = tmp_path / "states/seg1-fold1"
    try:
        procs.wait_until(lambda: list(states.glob("*/last.pt")), 120, "the first checkpoint", every=0.02)
        os.killpg(proc.pid, signal.SIGKILL)  # killed right after its first checkpoint
    finally:
        procs.kill_group(proc)
    assert checkpoint.load(saved_state(tmp_path, "seg1-fold1"))["epoch"] < 4
    assert not (tmp_path / "cut/best.pt").exists()  # the outputs come when the run ends
    resumed = cloudcli(
        "train", *args, "--out", str(tmp_path / "cut"), "--live", str(tmp_path / "cut_live"), cwd=tiny_cache
    )
    assert "resuming after epoch" in resumed.stderr
    full, cut = checkpoint.load(tmp_path / "full/best.pt"), checkpoint.load(tmp_path / "cut/best.pt")
    assert full["epoch"] == cut["epoch"] and full["value"] == cut["value"]
    assert all(torch.equal(full["model"][k], cut["model"][k]) for k in full["model"])
    assert tsv_rows(tmp_path / "cut_live/plots/metrics/val/dice.tsv") == 5
    assert (tmp_path / "cut_live/plots/metrics/val/dice.tsv").read_text() == (
        tmp_path / "full_live/plots/metrics/val/dice.tsv"
    ).read_text()
    assert not states.exists()


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["torchrun", "params"])
def test_torchrun_two_gloo_processes(tiny_cache, tmp_path, launcher) -> None:
    """Two DDP processes on CPU, launched by hand or by train.processes: 2 in params."""
    args = [
        "train",
        "--model",
        "seg1",
        "--fold",
        "2",
        "--out",
        str(tmp_path / "ckpt"),
        "--live",
        str(tmp_path / "live"),
    ]
    if launcher == "torchrun":
        command = [str(Path(sys.executable).parent / "torchrun"), "--nproc_per_node=2", "-m", "cloudcli", *args]
    else:
        params = yaml.safe_load((tiny_cache / "params.yaml").read_text())
        params["train"]["processes"] = 2
        params["train"]["swa"] = {"epochs": 2}  # every process averages; the BatchNorm pass reduces over both
        (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
        command = [sys.executable, "-m", "cloudcli", *args, "--params", str(tmp_path / "params.yaml")]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = procs.run(command, tiny_cache, env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "x 2 processes" in result.stderr
    assert ("train.processes 2: running under torchrun" in result.stderr) == (launcher == "params")
    config = json.loads((tmp_path / "ckpt/config.json").read_text())
    summary = json.loads((tmp_path / "ckpt/summary.json").read_text())
    samples = json.loads((tmp_path / "live/metrics.json").read_text())["train"]["samples"]
    assert samples == config["n_train"]  # both processes together saw every training image once
    assert config["processes"] == 2 and config["device"] == "cpu"  # how it ran, recorded next to the weights
    assert sum(summary["metrics"]["sums"][4:8]) == 4 * config["n_valid"]  # and every validation row once
    assert result.stderr.count("epoch 2/2") == 1  # only rank 0 reports and writes
    assert summary.get("swa", {}).get("epochs") == ([1, 2] if launcher == "params" else None)


def test_stalled_means_the_last_three_validation_losses_are_equal() -> None:
    from cloudcli.engine.loop import stalled

    assert stalled([0.9, 0.4354, 0.4354, 0.4354])  # the saturated Dice-only model of the chips demo
    assert not stalled([0.4354, 0.4354])  # too few epochs to say
    assert not stalled([0.4354, 0.4354, 0.4353])  # still moving
    assert stalled([0.5, 0.5 * (1 + 1e-7), 0.5]) and not stalled([0.5, 0.5 * (1 + 1e-5), 0.5])
