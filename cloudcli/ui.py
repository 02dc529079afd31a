"""What a stage prints: messages, tables and progress on stderr, a Rich bar in a terminal, lines in logs.

The one module that imports Rich.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.text import Text

console = Console(stderr=True, highlight=False)


def info(message: str) -> None:
    console.print(message, soft_wrap=True)


def warn(message: str) -> None:
    """A line that something looks wrong but the work goes on (yellow in a terminal)."""
    console.print(Text(f"warning: {message}", style="yellow"), soft_wrap=True)


def error(message: str) -> None:
    """The line an expected error ends a command with ("error: " in bold red in a terminal)."""
    console.print(Text.assemble(("error: ", "bold red"), message), soft_wrap=True)  # no markup: paths may hold [ ]


def table(title: str, columns: Sequence[str], rows: Iterable[Sequence[str]], first_width: int = 0) -> None:
    """Print a table: the first column left-aligned, never wrapped and at least `first_width`
    wide; the others right-aligned, each at least as wide as its header."""
    from rich.table import Table

    out = Table(title=title)
    out.add_column(columns[0], no_wrap=True, min_width=first_width)
    for col in columns[1:]:
        out.add_column(col, justify="right", min_width=len(col))
    for row in rows:
        out.add_row(*row)
    console.print(out)


@contextmanager
def progress(
    description: str, total: int, unit: str = "items", lines: bool = True, enabled: bool = True
) -> Iterator[Callable[[int], None]]:
    """Yield `advance(n)`. Terminal: a Rich bar. Logs: one line per ~10% and at the end, or none
    when `lines` is false (the caller prints its own summary line)."""
    start = time.perf_counter()
    if not enabled or (not lines and not console.is_terminal):
        yield lambda n=1: None
        return
    if console.is_terminal:
        columns = (
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
        )
        with Progress(*columns, console=console, transient=not lines) as bar:
            task = bar.add_task(description, total=total)
            yield lambda n=1: bar.advance(task, n)
        return
    done, next_report = 0, max(1, total // 10)

    def advance(n: int = 1) -> None:
        nonlocal done, next_report
        done += n
        if done >= next_report or done == total:
            elapsed = time.perf_counter() - start
            print(
                f"{description}: {done}/{total} {unit} ({100 * done // max(total, 1)}%) {elapsed:.1f}s",
                file=sys.stderr,
                flush=True,
            )
            next_report = done + max(1, total // 10)

    yield advance


@contextmanager
def board(slots: Sequence[str]) -> Iterator[Callable[[int, str | None], None]]:
    """Yield `show(slot, stage)`: in a terminal a live table of what each slot (named by `slots`)
    runs and for how long (`stage` None: idle); in logs nothing (the caller prints a line per
    stage)."""
    if not console.is_terminal:
        yield lambda slot, stage: None
        return
    from rich.live import Live
    from rich.table import Table

    running: dict[int, tuple[str, float]] = {}

    def render() -> Table:
        out = Table(title="cloudcli run")
        for column in ("slot", "stage", "time"):
            out.add_column(column)
        for k, name in enumerate(slots):
            stage, start = running.get(k, ("idle", 0.0))
            out.add_row(name, stage, f"{time.time() - start:.0f}s" if start else "")
        return out

    with Live(render(), console=console, refresh_per_second=2, get_renderable=render, transient=True):

        def show(slot: int, stage: str | None) -> None:
            if stage is None:
                running.pop(slot, None)
            else:
                running[slot] = (stage, time.time())

        yield show
