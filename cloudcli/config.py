"""params.yaml -> typed, validated, frozen config objects.

Every section of params.yaml is a frozen dataclass below; every key must be present and of the
declared type. An unknown key fails with the closest known key, before any data loads.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import yaml

from cloudcli.errors import ConfigError

Size = tuple[int, int]  # (height, width) in pixels


def _check(ok: bool, key: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"{key} {message}")


@dataclass(frozen=True)
class DataConfig:
    raw: str  # Kaggle folder: train.csv, sample_submission.csv, train_images/, test_images/
    image_size: Size  # (H, W) of every raw image; any other size is an error
    score_size: Size  # (H, W) at which masks are scored and submitted

    def __post_init__(self) -> None:
        for key in ("image_size", "score_size"):
            _check(min(getattr(self, key)) >= 1, f"data.{key}", "must be positive")


@dataclass(frozen=True)
class PreprocessConfig:
    image_size: Size  # (H, W) the cache stores for training; smp encoders need multiples of 32
    workers: int  # processes decoding JPEGs and RLEs

    def __post_init__(self) -> None:
        h, w = self.image_size
        _check(
            h % 32 == 0 and w % 32 == 0 and h > 0 and w > 0,
            "preprocess.image_size",
            f"must be positive multiples of 32 (encoders downsample 32x), got [{h}, {w}]; "
            "e.g. [192, 288] or [384, 576]",
        )
        _check(self.workers >= 1, "preprocess.workers", f"must be >= 1, got {self.workers}")


@dataclass(frozen=True)
class FoldConfig:
    n_splits: int  # K of K-fold cross-validation
    seed: int  # shuffles images before the stratified split

    def __post_init__(self) -> None:
        _check(self.n_splits >= 2, "fold.n_splits", f"must be >= 2, got {self.n_splits}")


@dataclass(frozen=True)
class Params:
    data: DataConfig
    preprocess: PreprocessConfig
    fold: FoldConfig


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate the whole params file; errors name the file and the key."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found; run from the repository root or pass --params") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}".replace("\n", " ")) from None
    try:
        return build(Params, raw, "")
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


def build(cls: type, raw: Any, where: str) -> Any:
    """Build dataclass `cls` from a parsed YAML mapping, strictly; `where` prefixes key names."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{where or 'top level'} must be a mapping, got {_describe(raw)}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for key in raw:
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f"; did you mean '{where}{close[0]}'?" if close else f"; known keys: {', '.join(names)}"
            raise ConfigError(f"unknown key '{where}{key}'{hint}")
    for name in names:
        if name not in raw:
            raise ConfigError(f"missing key '{where}{name}'")
    return cls(**{name: _coerce(hints[name], raw[name], f"{where}{name}") for name in names})


def _coerce(tp: Any, value: Any, key: str) -> Any:
    origin, args = get_origin(tp), get_args(tp)
    if dataclasses.is_dataclass(tp):
        return build(tp, value, f"{key}.")
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _coerce(inner, value, key)
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{key} must be one of {', '.join(map(repr, args))}, got {value!r}")
        return value
    if origin is tuple:
        if not isinstance(value, list) or (args[-1] is not Ellipsis and len(value) != len(args)):
            n = "a list" if args[-1] is Ellipsis else f"a list of {len(args)} values"
            raise ConfigError(f"{key} must be {n}, got {_describe(value)}")
        kinds = [args[0]] * len(value) if args[-1] is Ellipsis else list(args)
        return tuple(_coerce(t, v, f"{key}[{i}]") for i, (t, v) in enumerate(zip(kinds, value)))
    return _scalar(tp, value, key)


def _scalar(tp: type, value: Any, key: str) -> Any:
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, tp) and not (tp is int and isinstance(value, bool)):
        return value
    hint = ""
    if tp is float and isinstance(value, str):
        hint = "; YAML reads 5e-4 as a string: write 5.0e-4"
    names = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}
    raise ConfigError(f"{key} must be {names.get(tp, tp.__name__)}, got {_describe(value)}{hint}")


def _describe(value: Any) -> str:
    return f"{value!r} ({type(value).__name__})"
