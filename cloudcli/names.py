"""Names that become paths and words of shell commands, checked where they enter.

Model names (keys of `models` in params.yaml) name folders (models/<name>/fold0) and reach the
shell commands of dvc.yaml (`cloudcli train --model <name>`) and its params (`models.<name>`, so no
"."); class names name plot series and report files; image ids, read from the raw data's CSVs and
folders, name the files read (data/train_images/<id>) and written (show/<id>.png). None may hold a
path part, so nothing outside the data folder is read and nothing outside the project written.
"""

from __future__ import annotations

import re

MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")  # a folder name and one shell word
CLASS_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]{0,31}")  # no "_": a Kaggle label is <image_id>_<Class>
RESERVED_MODELS = ("ensemble",)  # tune.shape and report.models use it for the combined masks


def model_name_problem(name: str) -> str | None:
    """Why `name` cannot name a model, or None."""
    if name in RESERVED_MODELS:
        return f"{name!r} is reserved for the combined masks (tune.shape, report.models); choose another name"
    if not MODEL_NAME.fullmatch(name):
        return (
            f"{name!r} is not a plain name: letters, digits, '_' and '-', starting with a letter or digit, "
            "at most 64 characters (it names folders and reaches dvc.yaml's shell commands), e.g. seg2_b7"
        )
    return None


def class_name_problem(name: str) -> str | None:
    """Why `name` cannot name a class, or None."""
    if not CLASS_NAME.fullmatch(name):
        return (
            f"{name!r} is not a plain class name: letters, digits and '-', starting with a letter or digit, "
            "at most 32 characters (no '_': a label is <image_id>_<Class>), e.g. Fish or building"
        )
    return None


def image_id_problem(image_id: str) -> str | None:
    """Why `image_id` cannot name a file inside the data folder, or None."""
    if not image_id:
        return "is empty"
    if "/" in image_id or "\\" in image_id:
        return "holds a path separator; an image id is a file name inside the data folder"
    if image_id.startswith("."):
        return "starts with '.' (a hidden file, or '.' and '..'); an image id is a plain file name"
    if any(ord(c) < 32 or c == "\x7f" for c in image_id):
        return "holds a control character"
    return None
