"""The ``kvlab`` command line: a Typer app assembled from one module per command group.

Each module in :data:`COMMAND_MODULES` defines ``register(app: typer.Typer)``.
Modules are thin: parse options, call the library, print. Heavy imports happen
inside the command functions so that ``kvlab --help`` stays fast, and
:func:`main` builds the app with only the group a command line names
(:func:`build_app`); ``app`` (this module's attribute, built on first use) has
every group.
"""

from __future__ import annotations

import importlib
import inspect
import sys
from typing import Any

import typer

from kvlab.cli.options import error_line, leave
from kvlab.errors import KvlabError

#: Command-group modules under ``kvlab.cli``, in help order, with the commands each
#: registers (tests/test_cli_smoke.py checks them).
COMMAND_MODULES: dict[str, tuple[str, ...]] = {
    "plan": ("plan",),
    "models": ("models",),
    "simulate": ("simulate",),
    "cache_curve": ("cache-curve",),
    "workload": ("workload",),
    "compare": ("compare", "sweep"),
    "live": ("replay",),
    "bench": ("bench", "tiny-model"),
    "env": ("env",),
    "agents": ("agents",),
    "monitor": ("monitor",),
    "stress": ("stress",),
    "report": ("report",),
    "calibrate": ("calibrate",),
    "serve": ("serve",),
    "rl": ("rl",),
}

#: The module of each command.
COMMAND_MODULE: dict[str, str] = {
    command: module for module, commands in COMMAND_MODULES.items() for command in commands
}


def _root(
    version: bool = typer.Option(False, "--version", help="Print the kvlab version and exit."),
) -> None:
    if version:
        from kvlab import __version__

        typer.echo(__version__)
        raise typer.Exit()


def build_app(modules: tuple[str, ...] | None = None) -> typer.Typer:
    """The kvlab Typer app with the command groups of ``modules`` (default: all)."""
    app = typer.Typer(
        name="kvlab",
        help=(
            "kvlab: plan, simulate and measure the KV cache of LLM inference.\n\n"
            "plan: will it fit? simulate: what will my workload do to the cache? "
            "replay/bench: what does the server actually do?"
        ),
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
        rich_markup_mode="rich",
    )
    app.callback(invoke_without_command=True)(_root)
    for name in COMMAND_MODULES if modules is None else modules:
        importlib.import_module(f"kvlab.cli.{name}").register(app)
    _reflow_help(app)
    return app


def reflow(text: str) -> str:
    """``text`` dedented, with the lines of each prose paragraph joined.

    Rich markup mode keeps a help text's hard line breaks, which then break the
    text mid-sentence wherever the terminal (or the command list's help column)
    is narrower than the source lines. Paragraphs that start indented (examples)
    keep their lines.
    """
    paras = inspect.cleandoc(text).split("\n\n")
    return "\n\n".join(p if p.startswith(" ") else " ".join(p.split("\n")) for p in paras)


def _reflow_help(group: typer.Typer) -> None:
    """:func:`reflow` the help of every command and command group under ``group``."""
    for cmd in group.registered_commands:
        text = cmd.help or (inspect.getdoc(cmd.callback) if cmd.callback else None)
        if text:
            cmd.help = reflow(text)
    for sub in group.registered_groups:
        if isinstance(sub.help, str):
            sub.help = reflow(sub.help)
        if sub.typer_instance is not None:
            info = sub.typer_instance.info
            if isinstance(info.help, str):
                info.help = reflow(info.help)
            _reflow_help(sub.typer_instance)


def __getattr__(name: str) -> Any:
    if name == "app":  # every command group, built once on first use
        app = build_app()
        globals()["app"] = app
        return app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the app, turning KvlabError into one line and its exit code.

    A command line that starts with a command gets an app with only that
    command's group; any other (``--help``, ``--version``, a typo) the whole app.
    """
    args = sys.argv[1:] if argv is None else argv
    module = COMMAND_MODULE.get(args[0]) if args else None
    app = build_app(None if module is None else (module,))
    try:
        rc = app(args=argv, standalone_mode=False)
        # with standalone_mode=False click returns (not raises) a typer.Exit's code
        if isinstance(rc, int) and rc:
            sys.exit(rc)
    except KvlabError as e:
        typer.echo(error_line(e), err=True)
        leave(e.exit_code)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except typer.Abort:
        typer.echo("aborted", err=True)
        leave(130)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        leave(130)
    except Exception as e:
        # Usage errors (unknown option, missing argument) from Typer's click layer:
        # show the short usage message, never a traceback.
        show, code = getattr(e, "show", None), getattr(e, "exit_code", None)
        if callable(show) and isinstance(code, int):
            show()
            sys.exit(code)
        raise


if __name__ == "__main__":
    main()
