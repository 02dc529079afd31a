"""The `cloudcli` command: one thin subcommand per pipeline stage.

pipeline.py: the DVC stage commands; scale.py: `run`, the pipeline with stages side by side;
reports.py: reports and `show`; tools.py: `init`, `demo-data`, `export-masks`; bundle.py: `export`
and `predict`. Each command parses its options and calls the library; this module registers them
once, in the order `cloudcli --help` lists them, and turns expected errors into one line.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from cloudcli import __version__
from cloudcli.cli import bundle, pipeline, reports, scale, tools
from cloudcli.errors import CloudcliError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Reproducible cloud-segmentation pipeline: each command is a DVC stage.",
)
COMMANDS = (  # in `cloudcli --help` order; a function's name gives the command's (demo_data: demo-data)
    tools.init,
    tools.demo_data,
    pipeline.preprocess,
    pipeline.fold,
    pipeline.train,
    pipeline.infer,
    pipeline.pseudo,
    pipeline.ensemble,
    pipeline.tune,
    pipeline.submit,
    pipeline.cv,
    scale.run,
    tools.export_masks,
    bundle.export,
    bundle.predict,
    reports.show,
)
for command in COMMANDS:
    app.command()(command)

report_app = typer.Typer(
    no_args_is_help=True,
    help="Reports to look at: the labels, a model's out-of-fold predictions, the labels they contradict.",
)
report_app.command("data")(reports.report_data)
report_app.command("predictions")(reports.report_predictions)
report_app.command("labels")(reports.report_labels)
app.add_typer(report_app, name="report")


def _version(value: bool) -> None:
    if value:
        print(f"cloudcli {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit")
    ] = False,
) -> None:
    pass


def main() -> None:
    """Entry point: expected errors become one red line on stderr and exit code 1."""
    try:
        app()
    except CloudcliError as e:
        from cloudcli.ui import error

        error(str(e))
        sys.exit(1)
    except OSError as e:  # a file-system fault: full disk, read-only folder, permissions
        from cloudcli.errors import describe_os_error
        from cloudcli.ui import error

        error(describe_os_error(e))
        sys.exit(1)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except SystemExit as e:
        if e.code == 130:  # typer's own exit on Ctrl-C, silent: say it, in one line
            print("interrupted", file=sys.stderr)
        raise
