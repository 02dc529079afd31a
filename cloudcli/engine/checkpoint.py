"""Checkpoints written atomically; every one loads with torch.load(weights_only=True).

A training's resume state (last.pt with the curves so far, best.pt so far) lives outside the
stage's outputs, in `resume_root()/<run>/<settings hash>/`: DVC removes a stage's outputs before
running it, and a stage without persistent outputs can be restored from DVC's run-cache. A run
with other settings finds no state under its hash and starts afresh.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from cloudcli.errors import CloudcliError, DataError
from cloudcli.io import need_keys, parse_json
from cloudcli.ui import info

RESUME = Path(".cloudcli/resume")


def resume_root() -> Path:
    """Where training states wait to be resumed: $CLOUDCLI_RESUME_DIR, else .cloudcli/resume under
    the working directory (the repository root, under dvc repro)."""
    return Path(os.environ.get("CLOUDCLI_RESUME_DIR") or RESUME)


def resume_dir(root: Path, run: str, config_hash: str) -> Path:
    """The resume state of `run` (e.g. seg1-fold0) made with the settings hashed to `config_hash`."""
    return root / run / config_hash[:16]


def drop_other_states(work: Path) -> list[Path]:
    """Remove the states of the same run made with other settings (they can never resume); the
    folders removed."""
    others = [d for d in work.parent.glob("*") if d.is_dir() and d != work] if work.parent.is_dir() else []
    for d in others:
        shutil.rmtree(d, ignore_errors=True)
    return others


@dataclass
class State:
    """What survives an epoch: the resume point and the best epoch so far."""

    epoch: int = -1  # last completed epoch
    best_value: float = -float("inf")
    best_epoch: int = -1
    best_metrics: dict = field(default_factory=dict)

    @classmethod
    def from_json(cls, text: str) -> State:
        """The State last.pt records (as JSON); ValueError if a field is missing or of another type."""
        fields = json.loads(text)
        kinds = {"epoch": int, "best_value": (int, float), "best_epoch": int, "best_metrics": dict}
        if (
            not isinstance(fields, dict)
            or set(fields) != set(kinds)
            or not all(isinstance(fields[k], t) and not isinstance(fields[k], bool) for k, t in kinds.items())
        ):
            raise ValueError(f"its best-epoch record is not {', '.join(kinds)} of their types")
        return cls(**fields)


def save(obj: dict, path: str | Path) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


RETRAIN = "retrain it (dvc repro train)"


def load(path: str | Path, fix: str = RETRAIN) -> dict:
    """A checkpoint's dict; a file that is truncated, not a checkpoint or holds no model weights is
    a DataError naming it and ending with `fix`."""
    try:
        ckpt = _read(path)
    except (RuntimeError, EOFError, pickle.UnpicklingError) as e:
        reason = str(e).strip().split(". ")[0][:120] or "empty"
        raise DataError(f"{path}: not a readable checkpoint ({reason}); {fix}") from None
    if not isinstance(ckpt, dict) or "model" not in ckpt:
        raise DataError(f"{path}: not a cloudcli checkpoint (no model weights); {fix}")
    return ckpt


def _read(path: str | Path):
    return torch.load(path, map_location="cpu", weights_only=True)


def settings_of(ckpt: dict, path: str | Path, fix: str = RETRAIN) -> dict:
    """The training settings a best.pt records (the JSON of its resolved config: role, network,
    classes, ...), checked to hold what builds its network; else a DataError naming `path`."""
    text = ckpt.get("settings")
    if not isinstance(text, str):
        raise DataError(f"{path}: no training settings (a checkpoint of another program?); {fix}")
    settings = parse_json(text, f"{path}: settings", fix)
    return need_keys(settings, {"role": str, "network": dict, "classes": list}, f"{path}: settings", fix)


def save_best(out: Path, weights: dict, state: State, settings: dict, swa: dict | None = None) -> None:
    """best.pt: `weights` of the best epoch (state.best_epoch), or with `swa` (mode, 1-based epochs)
    the average of those epochs after the last one."""
    save(
        {
            "model": weights,
            "epoch": state.best_epoch + 1,
            "monitor": settings["monitor"],
            "value": state.best_value,
            "settings": json.dumps(settings),
        }
        | ({"swa": swa} if swa is not None else {}),
        out / "best.pt",
    )


def save_training(out, epoch, improved, trainer, state, config_hash, settings, curves) -> None:
    """last.pt: everything to resume after `epoch` (the trainer's network, EMA, optimiser,
    schedulers, scaler, checkpoint average; the curves so far); best.pt too when this epoch improved."""
    net, ema, opt, sched, scaler = trainer.net, trainer.ema, trainer.opt, trainer.sched, trainer.scaler
    if improved:
        save_best(out, (ema.module if ema else net).state_dict(), state, settings)
    save(
        {
            "epoch": epoch,
            "model": net.state_dict(),
            "ema": ema.state_dict() if ema else None,
            "swa": trainer.swa.state_dict() if trainer.swa else None,
            "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict() if sched else None,
            "scaler": scaler.state_dict() if scaler else None,
            "rng": torch.get_rng_state(),
            "best": json.dumps(asdict(state)),
            "config_sha1": config_hash,
            "curves": curves,
        },
        out / "last.pt",
    )


def resume(path, config_hash, net, opt, sched, scaler, ema, swa=None) -> tuple[State, dict[str, str]]:
    """Restore a training state in place from last.pt: (its State, its curves); a fresh State if
    made with other settings. A damaged file is an error that says how to start afresh."""
    try:
        ckpt = _read(path)
        if ckpt.get("config_sha1") != config_hash:
            info(f"{path}: made with other settings, starting afresh")
            return State(), {}
        net.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        for obj, key in ((sched, "scheduler"), (scaler, "scaler"), (ema, "ema"), (swa, "swa")):
            if obj is not None and ckpt[key] is not None:
                obj.load_state_dict(ckpt[key])
        torch.set_rng_state(ckpt["rng"])
        state = State.from_json(ckpt["best"])
    except Exception as e:  # truncated, not a checkpoint, another network's
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CloudcliError(
            f"{path}: damaged training state ({reason[:200]}); delete {Path(path).parent} "
            "(or train with --restart) to start this training afresh"
        ) from None
    info(f"{path}: resuming after epoch {state.epoch + 1}")
    return state, ckpt.get("curves", {})
