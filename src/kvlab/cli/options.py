"""Command-line parameters declared once, read by Typer and by a plain parser.

A command whose start-up time matters (``simulate``, ``cache-curve``, ``plan``)
declares its parameters as one tuple of :class:`Param`. :func:`typer_command`
builds its Typer command from that tuple (help, usage errors, every spelling
click accepts), and :func:`parse_plain` parses the usual command lines from the
same tuple without importing Typer, click or pydantic (together about 0.15 s;
see docs/cli-startup.md). A line :func:`parse_plain` does not accept goes to
Typer, so the plain parser only needs to be right on what it accepts: there it
gives the command function exactly the keyword arguments Typer would.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: The default of a parameter that must be given.
REQUIRED: Any = ...

#: Parameter kinds: the Python type each is passed as.
KINDS: dict[str, type] = {
    "str": str,
    "int": int,
    "float": float,
    "path": Path,
    "flag": bool,
    "strs": list,  # a repeatable option: list[str]
}


@dataclass(frozen=True, slots=True)
class Param:
    """One parameter of a command.

    ``name`` is the keyword of the command function; ``decls`` the option's
    names as Typer takes them (``("--model", "-m")``, or a boolean's
    ``("--cache/--no-cache",)``), empty for the positional argument. A
    ``default`` of None makes the type optional; :data:`REQUIRED` makes the
    parameter mandatory. ``kind`` is one of :data:`KINDS`.
    """

    name: str
    kind: str
    default: Any
    help: str
    decls: tuple[str, ...] = ()

    def annotation(self) -> Any:
        """The type Typer reads from the command function's signature."""
        base = KINDS[self.kind]
        if self.kind == "strs":
            return list[str]
        return base | None if self.default is None else base


def typer_command(params: Sequence[Param], body: Callable[..., None]) -> Callable[..., None]:
    """A function Typer can register as a command: ``params`` as its signature, calling
    ``body`` with the parsed keyword arguments."""
    import inspect

    import typer

    sig_params = []
    for p in params:
        default = list(p.default) if p.kind == "strs" else p.default
        if p.decls:
            info = typer.Option(default, *p.decls, help=p.help)
        else:
            info = typer.Argument(default, help=p.help)
        sig_params.append(
            inspect.Parameter(
                p.name,
                inspect.Parameter.POSITIONAL_OR_KEYWORD,
                default=info,
                annotation=p.annotation(),
            )
        )

    def command(**kwargs: Any) -> None:
        body(**kwargs)

    command.__signature__ = inspect.Signature(sig_params)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation() for p in params}
    return command


_PLAIN_INT = re.compile(r"0|[1-9][0-9]{0,17}")
_PLAIN_FLOAT = re.compile(r"(0|[1-9][0-9]{0,8})(\.[0-9]{1,6})?")


def parse_plain(params: Sequence[Param], args: Sequence[str]) -> dict[str, Any] | None:
    """The keyword arguments Typer would pass for ``args``, or None for Typer to parse them.

    Accepted: at most one positional argument (exactly one when ``params`` has
    one) that does not start with ``-``; options named in ``params`` written as
    ``--name VALUE``, ``--name=VALUE`` or ``-x VALUE``; flags without a value;
    every required option given. Values must be non-empty, must not start with
    ``-`` or carry surrounding spaces; integers in plain decimal, numbers as
    ``12`` or ``12.5``. A repeated option keeps its last value (a repeatable
    one, every value). Anything else (help, a typo, an odd value) returns None.
    """
    options: dict[str, tuple[Param, Any]] = {}
    for p in params:
        for decl in p.decls:
            if p.kind == "flag" and "/" in decl:
                on, off = decl.split("/")
                options[on] = (p, True)
                options[off] = (p, False)
            else:
                options[decl] = (p, True)
    kw: dict[str, Any] = {}
    positional: list[str] = []
    i = 0
    while i < len(args):
        tok = args[i]
        i += 1
        if not tok.startswith("-"):
            positional.append(tok)
            continue
        name, eq, value = tok.partition("=")
        found = options.get(name)
        if found is None or (eq and not name.startswith("--")):
            return None
        p, flag_value = found
        if p.kind == "flag":
            if eq:
                return None
            kw[p.name] = flag_value
            continue
        if not eq:
            if i == len(args):
                return None
            value = args[i]
            i += 1
        parsed = _plain_value(value, p.kind)
        if parsed is None:
            return None
        if p.kind == "strs":
            kw.setdefault(p.name, []).append(parsed)
        else:
            kw[p.name] = parsed
    arguments = [p for p in params if not p.decls]
    if len(positional) != len(arguments) or not all(map(_plain_text, positional)):
        return None
    kw.update(zip((p.name for p in arguments), positional, strict=True))
    out: dict[str, Any] = {}
    for p in params:
        if p.name in kw:
            out[p.name] = kw[p.name]
        elif p.default is REQUIRED:
            return None
        else:
            out[p.name] = list(p.default) if p.kind == "strs" else p.default
    return out


def _plain_text(value: str) -> bool:
    return bool(value) and not value.startswith("-") and value == value.strip()


def _plain_value(value: str, kind: str) -> Any:
    if not _plain_text(value):
        return None
    if kind == "int":
        return int(value) if _PLAIN_INT.fullmatch(value) else None
    if kind == "float":
        return float(value) if _PLAIN_FLOAT.fullmatch(value) else None
    if kind == "path":
        return Path(value)
    return value


def echo(text: str, *, err: bool = False) -> None:
    """``typer.echo(text, err=err)``, without importing Typer for plain ASCII text.

    Typer (click) writes the text and a newline and flushes; it would also
    strip ANSI escapes on a non-terminal and adapt the stream's encoding,
    which only non-ASCII or escape-carrying text can notice: that goes
    through Typer itself.
    """
    if not text.isascii() or "\x1b" in text:
        import typer

        typer.echo(text, err=err)
        return
    stream = sys.stderr if err else sys.stdout
    stream.write(text + "\n")
    stream.flush()


__all__ = ["KINDS", "REQUIRED", "Param", "echo", "parse_plain", "typer_command"]
