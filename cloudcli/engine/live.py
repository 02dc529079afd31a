"""DVCLive curves of a training run, and the one log line per epoch."""

from __future__ import annotations

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


def curves(live) -> dict[str, str]:
    """The curves written so far (DVCLive's small text files), by path inside its folder: saved in
    last.pt, so a resumed run's curves match its state exactly."""
    root = Path(live.dir)
    return {str(f.relative_to(root)): f.read_text() for f in sorted(root.rglob("*")) if f.is_file()}


def restore_curves(files: dict[str, str], live_dir: Path) -> None:
    """`live_dir` as it was when the resumed state was saved."""
    shutil.rmtree(live_dir, ignore_errors=True)
    for name, text in files.items():
        path = live_dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


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
