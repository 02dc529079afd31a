"""Training and inference on a CUDA GPU give what the CPU path gives: fp32, bf16, and fp16 with its
GradScaler, each with EMA and gradient accumulation on. Skipped without a GPU: `make gpu-check`.

Each CUDA run is compared with one CPU fp32 run of the same seed, data order and augmentations
(the tiny cache, fold 0: 16 training images, batch 4, accumulate 2: 2 optimiser steps per epoch,
4 in all; SGD at lr 0.01, under which the training loss falls from 0.61 to 0.42 between the two
epochs, so a wrong step shows far outside the tolerances). What is compared:
  - the curves: training and validation loss of each epoch (continuous in the weights). The
    validation Dice is not: it thresholds at 0.5, and a model this young has many probabilities
    near 0.5, so a rounding-sized change flips pixels. Nor are the weights: next to BatchNorm the
    convolutions' weight gradients are so sensitive at this stage that CPU runs under bf16 or
    fp16 autocast end 45-60% of their displacement away from the fp32 run, curves within 3%;
  - inference: the CPU-trained checkpoint predicted on CUDA against the same checkpoint on CPU,
    in uint8 levels (p * 255) at the scoring size.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from cloudcli.config import load_params, resolve_model
from cloudcli.data.maps import open_maps
from cloudcli.engine import checkpoint
from cloudcli.stages import infer, train

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (torch.cuda.is_available() is false)"),
]

FOLD = 0
TRAIN = {"epochs": 2, "ema": 0.9, "accumulate": 2, "optimizer": "sgd", "lr": 0.01, "momentum": 0.9, "workers": 0}
# Tolerances per precision of the CUDA run. Measured on the CPU under autocast (bf16; fp16 with
# GradScaler("cpu"), which skipped no step) against CPU fp32: largest relative gap of the 4 losses
# bf16 3.1%, fp16 1.4%; inference levels (max, mean) bf16 (4, 0.31), fp16 (1, 0.04). fp32 on CUDA
# is not the CPU's fp32: cuDNN convolutions run in TF32 by default on Ampere and later, whose
# 10-bit mantissa is fp16's, so fp32 gets fp16's tolerance. Each is about 3x the measured gap.
TOLERANCE = {  # precision: (loss rtol, uint8 levels max, uint8 levels mean)
    "fp32": (0.05, 4, 0.15),
    "fp16": (0.05, 4, 0.15),
    "bf16": (0.10, 12, 1.0),
}


def spec_for(tiny_cache: Path, device: str, precision: str):
    p = load_params(tiny_cache / "params.yaml")
    spec = resolve_model("seg1", p.network, p.train, p.models)
    return dataclasses.replace(spec, train=dataclasses.replace(spec.train, device=device, precision=precision, **TRAIN))


def train_on(tiny_cache: Path, out: Path, device: str, precision: str) -> Path:
    """Train seg1 on fold 0 for two epochs; `out`: models/seg1/fold0 (checkpoints) and live/ (curves)."""
    p = load_params(tiny_cache / "params.yaml")
    spec = spec_for(tiny_cache, device, precision)
    cache, folds = tiny_cache / "artifacts/preprocessed", tiny_cache / "artifacts/folds.csv"
    train.run(spec, p.augment, cache, folds, FOLD, out / f"models/seg1/fold{FOLD}", out / "live")
    return out


def infer_on(tiny_cache: Path, models: Path, out: Path, device: str, precision: str) -> dict[str, np.ndarray]:
    """The OOF and test maps (N, 4, H, W) uint8 of the fold 0 model under `models`, TTA none+hflip."""
    p = load_params(tiny_cache / "params.yaml")
    cfg = dataclasses.replace(p.infer, device=device, precision=precision, tta=("none", "hflip"), workers=0)
    cache, folds = tiny_cache / "artifacts/preprocessed", tiny_cache / "artifacts/folds.csv"
    infer.run("seg1", cfg, dataclasses.replace(p.cv, folds=(FOLD,)), models, cache, folds, out)
    return {name: open_maps(out, name)[:] for name in ("oof", "test")}


def curves(run: Path) -> np.ndarray:
    """(2, epochs): training and validation loss of each epoch."""
    tsv = [run / "live/plots/metrics/train/loss.tsv", run / "live/plots/metrics/val/loss.tsv"]
    return np.stack([pd.read_csv(path, sep="\t")["loss"].to_numpy() for path in tsv])


def levels_gap(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> tuple[int, float]:
    """(max, mean) absolute difference in uint8 levels over the OOF and test maps."""
    diffs = [np.abs(a[k].astype(np.int16) - b[k].astype(np.int16)) for k in ("oof", "test")]
    return max(int(d.max()) for d in diffs), float(np.concatenate([d.ravel() for d in diffs]).mean())


@pytest.fixture(scope="module")
def cpu_run(tiny_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, np.ndarray]]:
    """The CPU fp32 reference: trained, and its checkpoint predicted on the CPU."""
    out = train_on(tiny_cache, tmp_path_factory.mktemp("cpu"), "cpu", "fp32")
    return out, infer_on(tiny_cache, out / "models", out / "predictions", "cpu", "fp32")


@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_cuda_training_and_inference_match_the_cpu(tiny_cache, tmp_path, cpu_run, precision: str) -> None:
    reference, cpu_probs = cpu_run
    loss_rtol, levels_max, levels_mean = TOLERANCE[precision]
    run = train_on(tiny_cache, tmp_path, "cuda", precision)
    last = checkpoint.load(run / f"models/seg1/fold{FOLD}/last.pt")
    assert last["epoch"] == 1 and last["ema"] is not None  # both epochs ran, with the EMA copy
    if precision == "fp16":  # GradScaler: its scale halves on every skipped (overflowing) step
        assert last["scaler"] is not None
        assert last["scaler"]["scale"] == 2.0**16, (
            f"fp16 skipped {math.log2(2**16 / last['scaler']['scale']):.0f} steps"
        )
    else:
        assert last["scaler"] is None

    got, expected = curves(run), curves(reference)
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got, expected, rtol=loss_rtol, err_msg="training / validation loss per epoch")

    on_cuda = infer_on(tiny_cache, reference / "models", tmp_path / "predictions", "cuda", precision)
    worst, mean = levels_gap(on_cuda, cpu_probs)
    assert worst <= levels_max and mean <= levels_mean, f"uint8 levels: max {worst}, mean {mean:.3f}"
