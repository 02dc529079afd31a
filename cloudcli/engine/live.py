"""DVCLive curves of a training run, and the one log line per epoch."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from cloudcli.config import ResolvedModel
from cloudcli.engine.checkpoint import State
from cloudcli.engine.validate import MONITOR, monitored
from cloudcli.ui import info


def open_live(folder: Path, resume: bool):
    """A dvclive.Live writing to `folder`; `resume` appends to the curves of a resumed run."""
    from dvclive import Live

    return Live(dir=str(folder), resume=resume, save_dvc_exp=False, dvcyaml=None, report=None)


def snapshot_live(live, work: Path) -> None:
    """A copy of the curves so far in the resume folder `work` (as work/live), replaced whole."""
    tmp = work / ".live.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(live.dir, tmp)
    shutil.rmtree(work / "live", ignore_errors=True)
    os.replace(tmp, work / "live")


def restore_live(work: Path, live_dir: Path) -> None:
    """The curves of a resumed run back in `live_dir`, as they were at its last saved epoch."""
    saved = next((d for d in (work / "live", work / ".live.tmp") if d.is_dir()), None)
    if saved is not None:
        shutil.rmtree(live_dir, ignore_errors=True)
        shutil.copytree(saved, live_dir)


def log_epoch(
    live,
    spec: ResolvedModel,
    fold: int,
    epoch: int,
    train_loss: float,
    seen: int,
    metrics: dict,
    lrs: dict[str, float],
    state: State,
    seconds: float,
) -> None:
    """One epoch's row of every curve (train loss, validation metrics, learning rate per parameter
    group), and its log line."""
    live.step = epoch
    live.log_metric("train/loss", train_loss)
    live.log_metric("train/samples", seen)
    for key, value in metrics.items():
        if key != "sums" and value is not None:
            live.log_metric(f"val/{key}", value)
    for name, lr in lrs.items():
        live.log_metric(f"lr/{name}", lr)
    live.make_summary()
    monitor = MONITOR[spec.role]
    info(
        f"{spec.name} fold {fold} epoch {epoch + 1}/{spec.train.epochs}: train_loss {train_loss:.4f} "
        f"val_loss {metrics['loss']:.4f} {monitor} {monitored(metrics, spec.role):.4f} (best {state.best_value:.4f} "
        f"@{state.best_epoch + 1}) lr {max(lrs.values()):.2e} {seconds:.1f}s"
    )
