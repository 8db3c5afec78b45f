"""The ``kvlab`` entry point: plain command lines of the quick commands without Typer.

Building the Typer app imports Typer, click, pydantic and rich (about 0.15 s,
more than parsing a trace). The commands in :data:`PLAIN_COMMANDS` declare
their parameters once (:mod:`kvlab.cli.options`); a plain command line of one
of them (:func:`kvlab.cli.options.parse_plain`) runs its command function
directly, with the errors reported as :func:`kvlab.cli.app.main` reports them.
Every other command line (help, other commands, anything unusual) goes to the
Typer app, which loads only the command group it names.

When kvlab runs as a program (``main()`` without ``argv``), ``kvlab simulate``
freezes the objects alive once its workload is loaded (:func:`gc.freeze`):
the collections the run triggers then skip the workload and the modules. The
process is never forked and its collector never switched off.
"""

from __future__ import annotations

import importlib
import sys

#: Commands parsed without Typer when their command line is plain: name -> module
#: under ``kvlab.cli`` with ``PARAMS`` (a tuple of Param) and ``run_command(**kwargs)``.
PLAIN_COMMANDS: dict[str, str] = {
    "simulate": "simulate",
    "cache-curve": "cache_curve",
    "plan": "plan",
}


def main(argv: list[str] | None = None) -> None:
    """Run ``kvlab`` with ``argv`` (default ``sys.argv[1:]``)."""
    args = sys.argv[1:] if argv is None else list(argv)
    module_name = PLAIN_COMMANDS.get(args[0]) if args else None
    kwargs = None
    if module_name is not None:
        from kvlab.cli.options import parse_plain

        module = importlib.import_module(f"kvlab.cli.{module_name}")
        kwargs = parse_plain(module.PARAMS, args[1:])
    if kwargs is None:
        from kvlab.cli.app import main as app_main

        app_main(argv)
        return
    from kvlab.cli.options import echo
    from kvlab.errors import KvlabError

    if argv is None and module_name == "simulate":
        import gc

        kwargs["on_loaded"] = gc.freeze
    try:
        module.run_command(**kwargs)
    except KvlabError as e:  # as kvlab.cli.app.main reports it
        echo(f"error: {e}", err=True)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        echo("interrupted", err=True)
        sys.exit(130)
