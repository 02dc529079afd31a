"""params.yaml -> `Params`: read the YAML (the only place that does), build every section strictly.

`build` fails on an unknown key with the closest known key, on a missing key, and on a wrong type
(with a hint for `5e-4`, which YAML reads as a string); a key written twice in a mapping is an
error too (yaml.safe_load would silently keep the last).
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import yaml

from cloudcli.config.checks import _check_combination, check_names, check_square_augment
from cloudcli.config.schema import (
    CLASS_HEAD,
    CLASSIFIER_LOSSES,
    SEG_LOSSES,
    ModelEntry,
    NetworkConfig,
    TrainConfig,
    _check,
)
from cloudcli.config.schema_post import EnsembleConfig, Params
from cloudcli.errors import ConfigError


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key written twice in one mapping."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        first: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *anchor` may override; not a duplicate
                continue
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if not isinstance(key, typing.Hashable):  # SafeLoader's own error follows
                continue
            if key in first:
                raise ConfigError(
                    f"line {line}: key {key!r} is written twice in one mapping (first on line {first[key]}); "
                    "YAML would keep only the last: delete one"
                )
            first[key] = line
        return super().construct_mapping(node, deep)


def read_yaml(text: str) -> Any:
    """Parse YAML text strictly: a key written twice is a ConfigError naming the key and line."""
    return yaml.load(text, Loader=_StrictLoader)


@dataclass(frozen=True)
class ResolvedModel:
    """One model's complete settings: the defaults with its own overrides applied."""

    name: str
    role: str
    loss: dict[str, float]
    network: NetworkConfig
    train: TrainConfig


def resolve_model(
    name: str, defaults: NetworkConfig, train: TrainConfig, models: dict[str, ModelEntry]
) -> ResolvedModel:
    """Apply `models.<name>` overrides to the shared `network` and `train` sections."""
    if name not in models:
        close = difflib.get_close_matches(name, list(models), n=1)
        hint = f"did you mean {close[0]!r}?" if close else f"choose from {', '.join(models)}"
        raise ConfigError(f"unknown model {name!r} (not a key of `models` in params.yaml); {hint}")
    entry = models[name]
    known = CLASSIFIER_LOSSES if entry.role == "classifier" else SEG_LOSSES
    for loss, weight in entry.loss.items():
        _check(
            loss in known,
            f"models.{name}.loss",
            f"has unknown loss {loss!r} for role {entry.role}; choose from {', '.join(known)}",
        )
        _check(weight > 0, f"models.{name}.loss.{loss}", f"weight must be > 0, got {weight}")
    _check(bool(entry.loss), f"models.{name}.loss", "must name at least one loss")
    _check(
        set(entry.loss) != {CLASS_HEAD},
        f"models.{name}.loss",
        f"{CLASS_HEAD} trains the class-presence head only; add a mask loss, e.g. {{bce: 1.0, {CLASS_HEAD}: 0.4}}",
    )
    return ResolvedModel(
        name=name,
        role=entry.role,
        loss=entry.loss,
        network=_override(defaults, entry.network, f"models.{name}.network."),
        train=_override(train, entry.train, f"models.{name}.train."),
    )


def _override(base: Any, changes: dict, where: str) -> Any:
    raw = {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(base).items()}
    return build(type(base), {**raw, **changes}, where)


def override_ensemble(
    cfg: EnsembleConfig, vote: str | None, members: str | None, min_votes: int | None, weights: str | None
) -> EnsembleConfig:
    """`cfg` with the `cloudcli ensemble` flags laid over it, checked like params.yaml; members and
    weights are comma-separated. Options of the vote not chosen are dropped."""
    if all(v is None for v in (vote, members, min_votes, weights)):
        return cfg
    raw = {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(cfg).items()}
    if members is not None:
        raw.update(members=[m.strip() for m in members.split(",") if m.strip()], weights=None, min_votes=None)
    if vote is not None and vote != raw["vote"]:  # options of the other vote do not apply
        raw.update(vote=vote, min_votes=None, weights=None)
    if min_votes is not None:
        raw["min_votes"] = min_votes
    if weights is not None:
        try:
            raw["weights"] = [float(w) for w in weights.split(",")]
        except ValueError:
            raise ConfigError(f"--weights must be comma-separated numbers, got {weights!r}") from None
    return build(EnsembleConfig, raw, "ensemble.")


def _read_params(path: Path) -> Any:
    """The parsed params file; each way a file fails to be YAML is one line naming the file."""
    if path.exists() and not path.is_dir() and not path.is_file():  # a FIFO or a device would block or never end
        raise ConfigError(f"{path}: not a regular file; --params takes the params file, e.g. params.yaml")
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found; run from the repository root or pass --params") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a folder; --params takes the params file, e.g. params.yaml") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the params file ({e.strerror or e})") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise ConfigError(
            f"{path}: line {line}: byte 0x{data[e.start]:02x} is not UTF-8; save the file as UTF-8"
        ) from None
    try:
        raw = read_yaml(text)
    except yaml.reader.ReaderError as e:  # a character YAML does not allow (NUL, most control characters)
        line = text[: e.position].count("\n") + 1
        char = chr(e.character) if isinstance(e.character, int) else e.character
        raise ConfigError(f"{path}: not valid YAML: line {line}: character {char!r} is not allowed") from None
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise ConfigError(f"{path}: not valid YAML: {where}{e.problem or e.context}".replace("\n", " ")) from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}".replace("\n", " ")) from None
    except RecursionError:
        raise ConfigError(f"{path}: not valid params: lists or mappings nested too deeply") from None
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
    if raw is None:
        raise ConfigError(f"{path}: the file is empty; it holds the sections of params.yaml (data, preprocess, ...)")
    return raw


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate the whole params file; errors name the file and the key."""
    path = Path(path)
    raw = _read_params(path)
    try:
        params = build(Params, raw, "")
        check_names(params)  # before a name reaches a path or a message
        for name in params.models:  # overrides are checked now, not when the model trains
            resolve_model(name, params.network, params.train, params.models)
        trained = [resolve_model(m, params.network, params.train, params.models) for m in params.cv.models]
        trained += [resolve_model(m, params.network, params.train, params.models) for m in params.pseudo.models]
        sizes = {m.name: m.train.input_size or params.preprocess.cache_size for m in trained}
        check_square_augment(params.augment, sizes)
        _check_combination(params)
        _check(
            all(0 <= k < params.fold.n_splits for k in params.cv.folds),
            "cv.folds",
            f"must be fold numbers 0..{params.fold.n_splits - 1} (fold.n_splits), got {list(params.cv.folds)}",
        )
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
    return params


def build(cls: type, raw: Any, where: str) -> Any:
    """Build dataclass `cls` from a parsed YAML mapping, strictly; `where` prefixes key names."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{where.rstrip('.') or 'top level'} must be a mapping, got {_describe(raw)}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for key in raw:
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f"; did you mean '{where}{close[0]}'?" if close else f"; known keys: {', '.join(names)}"
            raise ConfigError(f"unknown key '{where}{key}'{hint}")
    required = {f.name for f in dataclasses.fields(cls) if f.default is f.default_factory is dataclasses.MISSING}
    for name in names:
        if name in required and name not in raw:
            raise ConfigError(f"missing key '{where}{name}'")
    values = {name: _coerce(hints[name], raw[name], f"{where}{name}") for name in names if name in raw}
    try:
        return cls(**values)
    except ConfigError as e:
        if where.startswith("models."):  # a value check inside an override: name the model
            raise ConfigError(f"{where.rstrip('.').rsplit('.', 1)[0]}: {e}") from None
        raise


def _coerce(tp: Any, value: Any, key: str) -> Any:
    origin, args = get_origin(tp), get_args(tp)
    if dataclasses.is_dataclass(tp):
        return build(tp, value, f"{key}.")
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        if len(inner) == 1:
            return _coerce(inner[0], value, key)
        return _either(inner, value, key)
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{key} must be one of {', '.join(map(repr, args))}, got {value!r}")
        return value
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key} must be a mapping, got {_describe(value)}")
        _, v_type = args or (str, Any)
        return {str(k): v if v_type is Any else _coerce(v_type, v, f"{key}.{k}") for k, v in value.items()}
    if origin is tuple:
        if not isinstance(value, list) or (args[-1] is not Ellipsis and len(value) != len(args)):
            n = "a list" if args[-1] is Ellipsis else f"a list of {len(args)} values"
            raise ConfigError(f"{key} must be {n}, got {_describe(value)}")
        kinds = [args[0]] * len(value) if args[-1] is Ellipsis else list(args)
        return tuple(_coerce(t, v, f"{key}[{i}]") for i, (t, v) in enumerate(zip(kinds, value)))
    return _scalar(tp, value, key)


def _either(kinds: list, value: Any, key: str) -> Any:
    """`value` as the first of `kinds` (e.g. Literal["all"] | tuple[float, ...]) that takes it; a
    list goes to the list kind, so its error names the bad item."""
    lists = [k for k in kinds if get_origin(k) is tuple]
    if isinstance(value, list) and lists:
        return _coerce(lists[0], value, key)
    for kind in kinds:
        with contextlib.suppress(ConfigError):
            return _coerce(kind, value, key)
    names = [" or ".join(map(repr, get_args(k))) if get_origin(k) is Literal else "a list" for k in kinds]
    raise ConfigError(f"{key} must be {' or '.join(names)}, got {_describe(value)}")


def _scalar(tp: type, value: Any, key: str) -> Any:
    if tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key} must be a mapping, got {_describe(value)}")
        return value
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
    text = repr(value)
    return f"{text if len(text) <= 80 else text[:77] + '...'} ({type(value).__name__})"
