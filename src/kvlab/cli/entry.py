"""The ``kvlab`` entry point: plain command lines of the quick commands without Typer.

Building the Typer app imports Typer, click, pydantic and rich (about 0.15 s,
more than parsing a trace). The commands in :data:`PLAIN_COMMANDS` declare
their parameters once (:mod:`kvlab.cli.options`); a plain command line of one
of them (:func:`kvlab.cli.options.parse_plain`) runs its command function
directly, with the errors reported as :func:`kvlab.cli.app.main` reports them.
Every other command line (help, other commands, anything unusual) goes to the
Typer app, which loads only the command group it names.

When kvlab runs as a program (``main()`` without ``argv``), a quick command
that loads a workload tunes the cyclic garbage collector of its own process, which holds little but
the workload: young collections every :data:`YOUNG_COLLECTION_THRESHOLD`
container allocations instead of CPython's 700 (loading a large trace creates
a few hundred thousand records that all stay alive, and each third full
collection walked all of them), and once the workload is loaded it is frozen
(:func:`gc.freeze`): later collections skip it and the modules. The collector
stays on; library calls never touch it, and ``main(argv)`` (in a host process)
leaves it alone.
"""

from __future__ import annotations

import importlib
import sys

#: The quick commands that load a workload (their ``run_command`` takes ``on_loaded``).
WORKLOAD_COMMANDS: tuple[str, ...] = ("simulate", "cache_curve")

#: Allocations between young collections when kvlab runs a workload command as a program.
YOUNG_COLLECTION_THRESHOLD = 10_000

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
    from kvlab.cli.options import echo, error_line, leave
    from kvlab.errors import KvlabError

    if argv is None and module_name in WORKLOAD_COMMANDS:
        import gc

        gc.set_threshold(YOUNG_COLLECTION_THRESHOLD, *gc.get_threshold()[1:])
        kwargs["on_loaded"] = gc.freeze
    try:
        module.run_command(**kwargs)
    except KvlabError as e:  # as kvlab.cli.app.main reports it
        echo(error_line(e), err=True)
        leave(e.exit_code)
    except KeyboardInterrupt:
        echo("interrupted", err=True)
        leave(130)
