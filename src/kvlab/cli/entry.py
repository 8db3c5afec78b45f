"""The ``kvlab`` entry point: ``kvlab simulate`` without Typer when its arguments are plain.

Building the Typer app imports Typer, pydantic and every command group, which
costs more than parsing a trace. For ``kvlab simulate`` with plain arguments
(:func:`kvlab.cli.simulate.parse_plain_args`) the command runs directly, with
the same error handling as :func:`kvlab.cli.app.main`; every other command
line (help, other commands, anything unusual) goes to the Typer app.

When kvlab runs as a program (``main()`` without ``argv``), a successful plain
``simulate`` ends the process as soon as its output is flushed and the atexit
handlers have run: the simulation leaves several hundred thousand objects
(some in reference cycles) that a normal interpreter exit would collect and
free one by one, for nothing.
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
    import gc

    from kvlab.cli.simulate import echo, run_command
    from kvlab.errors import KvlabError

    was_enabled = gc.isenabled()
    gc.disable()  # run_command pauses it anyway; not resuming it spares the final collection
    try:
        run_command(**kwargs)
    except KvlabError as e:  # as kvlab.cli.app.main reports it
        echo(f"error: {e}", err=True)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        echo("interrupted", err=True)
        sys.exit(130)
    finally:
        if was_enabled and argv is not None:
            gc.enable()
    if argv is None:
        _end_process()
    elif was_enabled:
        gc.enable()


def _end_process() -> None:
    """Exit with status 0 now: flush the standard streams, run atexit handlers, skip teardown.

    If a stream cannot be flushed (say a closed pipe), return instead and let
    the interpreter's own exit report it as it always has.
    """
    import atexit
    import os

    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):
        return
    atexit._run_exitfuncs()
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):
        return
    os._exit(0)
