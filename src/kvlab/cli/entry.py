"""The ``kvlab`` entry point: ``kvlab simulate`` without Typer when its arguments are plain.

Building the Typer app imports Typer, pydantic and every command group, which
costs more than parsing a trace. For ``kvlab simulate`` with plain arguments
(:func:`kvlab.cli.simulate.parse_plain_args`) the command runs directly, with
the same error handling as :func:`kvlab.cli.app.main`; every other command
line (help, other commands, anything unusual) goes to the Typer app.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> None:
    """Run ``kvlab`` with ``argv`` (default ``sys.argv[1:]``)."""
    args = sys.argv[1:] if argv is None else list(argv)
    kwargs = None
    if args and args[0] == "simulate":
        from kvlab.cli.simulate import parse_plain_args

        kwargs = parse_plain_args(args[1:])
    if kwargs is None:
        from kvlab.cli.app import main as app_main

        app_main(argv)
        return
    from kvlab.cli.simulate import echo, run_command
    from kvlab.errors import KvlabError

    try:
        run_command(**kwargs)
    except KvlabError as e:  # as kvlab.cli.app.main reports it
        echo(f"error: {e}", err=True)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        echo("interrupted", err=True)
        sys.exit(130)
