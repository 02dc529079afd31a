"""The packaged defaults (defaults.yaml, identical to the repository's params.yaml) and presets.

A preset (presets/<name>.yaml) holds only what differs from the defaults. `merge` lays it over
them: sections, `models` and a model's `network` / `train` overrides merge key by key; anything
else (a value, a list, a loss's weights, the pseudo_rounds mapping) is replaced whole. `params_text`
writes the result as the defaults' own text with the preset's lines in place of the ones it
changes, so unchanged values keep the defaults' comments.
"""

from __future__ import annotations

import dataclasses
import re
import typing
from importlib import resources
from pathlib import Path
from typing import Any, get_args, get_origin

import yaml

from cloudcli.config.loader import read_yaml
from cloudcli.config.schema import ModelEntry
from cloudcli.config.schema_post import Params
from cloudcli.errors import CloudcliError, ConfigError
from cloudcli.io import write_text

PACKAGE = resources.files("cloudcli.config")
KEY = re.compile(r"^( *)([A-Za-z_][\w-]*):(?: |$)")  # a mapping key at the start of a line
KeyPath = tuple[str, ...]  # keys from the top: ("train", "lr")


def preset_names() -> list[str]:
    return sorted(
        p.name.removesuffix(".yaml") for p in PACKAGE.joinpath("presets").iterdir() if p.name.endswith(".yaml")
    )


def defaults_text() -> str:
    return PACKAGE.joinpath("defaults.yaml").read_text()


def preset_text(name: str) -> str:
    names = preset_names()
    if name not in names:
        raise ConfigError(f"unknown preset {name!r}; choose from {', '.join(names)}")
    return PACKAGE.joinpath("presets", f"{name}.yaml").read_text()


def _child(tp: Any, key: str) -> Any:
    """The schema type of `key` inside a value of type `tp`; None where the schema has no such key."""
    if dataclasses.is_dataclass(tp):
        return typing.get_type_hints(tp).get(key)
    if get_origin(tp) is dict:
        return get_args(tp)[1]
    return Any if tp is dict else None


def _merges(tp: Any) -> bool:
    """Sections, `models` and a model's override mappings merge; other mappings are one value."""
    nested = get_origin(tp) is dict and get_args(tp)[1] is ModelEntry  # models; pseudo_rounds is one value
    return dataclasses.is_dataclass(tp) or tp is dict or nested


def merge(defaults: Any, preset: Any, tp: Any = Params) -> Any:
    """`preset` laid over `defaults` (parsed YAML); `tp` is the schema type both describe."""
    if not (_merges(tp) and isinstance(defaults, dict) and isinstance(preset, dict)):
        return preset
    out = dict(defaults)
    for key, value in preset.items():
        out[key] = merge(defaults[key], value, _child(tp, key)) if key in defaults else value
    return out


def preset_params(name: str | None) -> dict:
    """The complete params (parsed YAML) of a preset: the defaults with its values; None = the defaults."""
    defaults = read_yaml(defaults_text())
    return defaults if name is None else merge(defaults, read_yaml(preset_text(name)) or {})


def params_text(name: str | None) -> str:
    """The complete params.yaml text of a preset (None: the defaults), comments kept."""
    text = defaults_text()
    if name is None:
        return text
    preset = preset_text(name)
    header = "".join(_header(preset.splitlines(keepends=True))).rstrip("\n")
    header += "\n#\n" if header else ""  # the preset's comments, then the defaults' own
    merged = preset_params(name)
    try:
        body = _merge_lines(text, preset, merged)
        if read_yaml(body) == merged:
            return header + body
    except (KeyError, ConfigError, yaml.YAMLError):  # a layout the line merge does not follow
        pass
    return header + yaml.safe_dump(merged, sort_keys=False, width=120)


def write_params(out: Path, preset: str | None, force: bool) -> None:
    """Write a complete params file: the defaults, or the defaults with a preset's values."""
    text = params_text(preset)  # an unknown preset fails first: the error lists the choices
    if out.exists() and not force:
        raise CloudcliError(f"--out {out}: already exists; pass --force to replace it")
    write_text(out, text)


def _header(lines: list[str]) -> list[str]:
    """The comment lines above the first key."""
    return lines[: next((i for i, line in enumerate(lines) if KEY.match(line)), len(lines))]


def _spans(lines: list[str]) -> dict[KeyPath, tuple[int, int]]:
    """Each key's lines [start, end): its own line, then every deeper line up to a blank one."""
    spans: dict[KeyPath, tuple[int, int]] = {}
    stack: list[tuple[int, KeyPath]] = []  # (indent, path) of the keys enclosing the current line
    for i, line in enumerate(lines):
        found = KEY.match(line)
        if not found:
            continue
        indent = len(found[1])
        while stack and stack[-1][0] >= indent:
            stack.pop()
        path = (stack[-1][1] if stack else ()) + (found[2],)
        end = i + 1
        while end < len(lines) and lines[end].strip() and len(lines[end]) - len(lines[end].lstrip(" ")) > indent:
            end += 1
        spans[path] = (i, end)
        stack.append((indent, path))
    return spans


def _merge_lines(defaults: str, preset: str, merged: dict) -> str:
    """The defaults' text with the preset's lines replacing changed values and adding new keys.

    A changed value's lines (its key line and continuation comments) become the preset's lines;
    a new key's lines go at the end of its parent's block. The caller checks the result parses
    to `merged` and falls back to a plain dump otherwise.
    """
    d_lines, p_lines = defaults.splitlines(keepends=True), preset.splitlines(keepends=True)
    d_spans, p_spans = _spans(d_lines), _spans(p_lines)
    edits: list[tuple[int, int, list[str]]] = []  # replace d_lines[start:end] by these lines

    def walk(default: dict, over: dict, done: dict, tp: Any, path: KeyPath) -> None:
        for key, value in over.items():
            sub, sub_tp = (*path, key), _child(tp, key)
            p_start, p_end = p_spans[sub]
            if key not in default:
                end = d_spans[path][1] if path else len(d_lines)
                edits.append((end, end, p_lines[p_start:p_end]))
            elif done[key] == default[key]:
                continue
            elif (
                _merges(sub_tp)
                and isinstance(value, dict)
                and any(len(p) > len(sub) and p[: len(sub)] == sub for p in d_spans)
            ):
                walk(default[key], value, done[key], sub_tp, sub)  # a block in the defaults: per key
            elif done[key] == value:
                edits.append((*d_spans[sub], p_lines[p_start:p_end]))
            else:  # a one-line mapping in the defaults that the preset extends
                indent = " " * (len(d_lines[d_spans[sub][0]]) - len(d_lines[d_spans[sub][0]].lstrip(" ")))
                flow = yaml.safe_dump({key: done[key]}, default_flow_style=True, sort_keys=False, width=10**6)
                edits.append((*d_spans[sub], [f"{indent}{flow.strip()[1:-1]}\n"]))

    walk(read_yaml(defaults), read_yaml(preset) or {}, merged, Params, ())
    # bottom up, so earlier line numbers hold; at one line, a replacement before the insertions that go above it
    for _, (start, end, new) in sorted(
        enumerate(edits), key=lambda e: (e[1][0], e[1][1] > e[1][0], e[0]), reverse=True
    ):
        d_lines[start:end] = new
    return "".join(d_lines)


def _is_block(path: KeyPath, spans: dict[KeyPath, tuple[int, int]]) -> bool:
    """Whether the key at `path` holds a block mapping (keys on lines of their own)."""
    return any(len(p) > len(path) and p[: len(path)] == path for p in spans)
