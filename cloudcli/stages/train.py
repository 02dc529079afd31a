"""Stage `train@<model>-<fold>`: train one model on one fold (under torchrun: on N processes)."""

from __future__ import annotations

from pathlib import Path

from cloudcli.config import AugmentConfig, ResolvedModel
from cloudcli.engine.checkpoint import resume_root
from cloudcli.engine.distributed import setup, teardown
from cloudcli.engine.fit import fit
from cloudcli.ui import info

PARAMS = ("network", "train", "augment", "models.{model}")  # {model}: the trained model's name


def run(
    spec: ResolvedModel,
    augment: AugmentConfig,
    cache: Path,
    folds: Path,
    fold: int,
    out: Path,
    live: Path,
    restart: bool = False,
    pseudo: Path | None = None,
    states: Path | None = None,
) -> dict:
    ctx = setup(spec.train.device)
    try:
        return fit(spec, augment, cache, folds, fold, out, live, ctx, restart, pseudo, states)
    except KeyboardInterrupt:
        if ctx.main:
            info(
                f"interrupted: the last completed epoch is saved under {states or resume_root()}; "
                "run the same command (or dvc repro) to resume from it"
            )
        raise
    finally:
        teardown()
