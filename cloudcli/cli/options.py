"""Options several commands share, and the check of a --round name."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cloudcli.errors import CloudcliError

RoundOpt = Annotated[
    str | None, typer.Option("--round", help="Pseudo-label round: a key of pseudo_rounds in params.yaml")
]
ParamsOpt = Annotated[Path, typer.Option("--params", help="Params file with every tunable value")]


def check_round(name: str | None, rounds: dict) -> None:
    if name is not None and name not in rounds:
        known = ", ".join(rounds) or "none: pseudo_rounds is {}"
        raise CloudcliError(f"--round: unknown round {name!r}; pseudo_rounds in params.yaml has {known}")
