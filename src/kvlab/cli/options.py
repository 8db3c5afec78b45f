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

import atexit
import contextlib
import math
import os
import re
import signal
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

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


def error_line(e: BaseException) -> str:
    """The one line a command prints for a :class:`~kvlab.errors.KvlabError`: ``error: ...``,
    or an :class:`~kvlab.errors.Interrupted`'s own message (it is not a mistake)."""
    from kvlab.errors import Interrupted

    return str(e) if isinstance(e, Interrupted) else f"error: {e}"


def leave(code: int) -> NoReturn:
    """``sys.exit(code)``, the command's outcome already reported in one line.

    After Ctrl-C (130), a second SIGINT arriving while the interpreter shuts down is
    ignored: Python would otherwise die by the signal and the exit code would not be
    130. And the interrupt, handled, is not reported again by CPython at exit
    (:func:`_forget_unhandled_interrupt`)."""
    _forget_unhandled_interrupt(code)
    if code == 130:
        with contextlib.suppress(ValueError, OSError):  # not the main thread
            signal.signal(signal.SIGINT, signal.SIG_IGN)
    sys.exit(code)


def _forget_unhandled_interrupt(code: int) -> None:
    """Clear CPython's process-wide "unhandled KeyboardInterrupt" flag.

    CPython sets it whenever a KeyboardInterrupt leaves code that a C extension runs
    through ``PyRun_String`` (pybind11's ``py::exec``; torch's import does this), even
    when Python code catches the exception later, as kvlab does; and after
    finalization ``Py_RunMain`` then kills the process by SIGINT (exit -2) whatever
    ``sys.exit`` said. kvlab has handled that interrupt. The flag is the C global
    ``_Py_UnhandledKeyboardInterrupt`` up to Python 3.11; where it cannot be reached
    (3.12 moved it into the runtime state) an interrupted command (130) ends with
    ``os._exit(130)`` once its exit handlers ran (the last handler, streams flushed),
    so the exit code stays 130 there too."""
    import ctypes

    try:
        flag = ctypes.c_int.in_dll(ctypes.pythonapi, "_Py_UnhandledKeyboardInterrupt")
    except (AttributeError, ValueError, OSError):
        flag = None
    if flag is not None:
        flag.value = 0
    elif code == 130:
        _INTERRUPTED.append(code)


#: Set by :func:`_forget_unhandled_interrupt` where CPython's flag cannot be cleared.
_INTERRUPTED: list[int] = []


def _exit_interrupted() -> None:
    """The last exit handler (registered when this module is imported, before any
    library's): end an interrupted command with 130 (see :func:`leave`)."""
    if _INTERRUPTED:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(_INTERRUPTED[0])


atexit.register(_exit_interrupted)


@contextlib.contextmanager
def sigint_ignored() -> Iterator[None]:
    """Ignore Ctrl-C inside the block: an interrupted command writes what it finished
    and its one line there, and a second SIGINT cannot cut that short. The handler
    before it comes back after. Outside the main thread (a host running a command in
    a thread) this does nothing."""
    try:
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    except (ValueError, OSError):
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def check_number(
    value: float | None,
    option: str,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
) -> None:
    """Raise :class:`~kvlab.errors.ConfigError` naming ``option`` unless ``value`` is
    None or a finite number within [``low``, ``high``] (``(low, high]`` with
    ``low_open``). Typer reads ``nan``, ``inf`` and ``1e400`` as floats: every
    float option of a command goes through here before any work starts."""
    from kvlab.errors import ConfigError

    if value is None:
        return
    if low is None:
        bound = ""
    else:
        bound = f" {'>' if low_open else '>='} {low:g}"
    if high is not None:
        bound += (" and" if bound else "") + f" <= {high:g}"
    if not math.isfinite(value):
        raise ConfigError(f"{option} must be a finite number{bound}, got {value!r}")
    if (low is not None and (value <= low if low_open else value < low)) or (
        high is not None and value > high
    ):
        raise ConfigError(f"{option} must be{bound}, got {value:g}")


def check_fraction(value: float | None, option: str, *, zero: bool = True) -> None:
    """:func:`check_number` for a fraction: in [0, 1] (``(0, 1]`` without ``zero``)."""
    check_number(value, option, low=0.0, high=1.0, low_open=not zero)


def output_dir(path: str | os.PathLike[str], option: str = "--out") -> Path:
    """Make ``path`` a directory a command can write into, before any work is done.

    A missing directory is created, with its missing parents; an existing file
    there, a file where a parent directory should be, or a place the user cannot
    write to is a :class:`~kvlab.errors.ConfigError` of one line naming
    ``option`` and the path (exit 2). Every command that writes a directory
    (``simulate``, ``replay``, ``bench``, ``sweep``, ``cache-curve --plot``)
    checks its output here."""
    from kvlab.errors import ConfigError

    p = Path(path)
    if p.exists() and not p.is_dir():
        raise ConfigError(f"{option} {p}: exists and is not a directory")
    blocker = _file_above(p)
    if blocker is not None:
        raise ConfigError(f"{option} {p}: {blocker} is a file, not a directory")
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"{option} {p}: cannot create it ({e.strerror or e})") from None
    if not os.access(p, os.W_OK | os.X_OK):
        raise ConfigError(f"{option} {p}: not writable")
    return p


@contextlib.contextmanager
def output_dir_kept(path: Path, created: bool) -> Iterator[None]:
    """Remove ``path`` again when the block fails with a :class:`~kvlab.errors.KvlabError`
    (a bad workload, a server that cannot be reached) while the directory is still
    empty and :func:`output_dir` ``created`` it: a failed command leaves nothing behind."""
    from kvlab.errors import Interrupted, KvlabError

    try:
        yield
    except KvlabError as e:
        if created and not isinstance(e, Interrupted):
            with contextlib.suppress(OSError):
                path.rmdir()  # only when empty
        raise


def output_file(
    path: str | os.PathLike[str], option: str = "--out", *, make_parent: bool = False
) -> Path:
    """Check that ``path`` can be written as a file, before any work is done: not an
    existing directory, in a directory the user can write to. A missing parent
    directory is an error (more often a typo than a wish) unless ``make_parent``
    (the command creates it: figures). A :class:`~kvlab.errors.ConfigError` of one
    line naming ``option`` otherwise."""
    from kvlab.errors import ConfigError

    p = Path(path)
    if p.is_dir():
        raise ConfigError(f"{option} {p}: is a directory, expected a file")
    parent = p.parent
    blocker = _file_above(p)
    if blocker is not None:
        raise ConfigError(f"{option} {p}: {blocker} is a file, not a directory")
    if not parent.is_dir():
        if make_parent:
            return p
        raise ConfigError(f"{option} {p}: directory {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK) or (p.exists() and not os.access(p, os.W_OK)):
        raise ConfigError(f"{option} {p}: not writable")
    if p.exists() and not p.is_file():  # a FIFO would block the writer, a device swallow it
        raise ConfigError(f"{option} {p}: exists and is not a regular file")
    _probe_file(p, option)
    return p


#: File name endings of the figures kvlab writes (matplotlib's formats; none: PNG).
FIGURE_SUFFIXES: tuple[str, ...] = (".png", ".svg", ".pdf", ".jpg", ".jpeg")


def output_figure(path: str | os.PathLike[str], option: str = "--plot") -> Path:
    """:func:`output_file` for a figure: its name ends in one of :data:`FIGURE_SUFFIXES`
    (or has no suffix: PNG), else one line naming ``option`` (not matplotlib's error
    after all the work)."""
    from kvlab.errors import ConfigError

    p = Path(path)
    if p.suffix and p.suffix.lower() not in FIGURE_SUFFIXES:
        raise ConfigError(
            f"{option} {p}: a figure is written as {', '.join(FIGURE_SUFFIXES)}; "
            f"{p.suffix!r} is not one of them"
        )
    return output_file(p, option)


def _probe_file(p: Path, option: str) -> None:
    """Open ``p`` for writing (created, then removed again when it was not there;
    an existing file is not changed): the permission bits do not tell everything (a
    read-only or special filesystem such as /proc, root, a full quota)."""
    from kvlab.errors import ConfigError

    existed = p.exists()
    try:
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_NONBLOCK, 0o666)
    except OSError as e:
        raise ConfigError(f"{option} {p}: cannot write it ({e.strerror or e})") from None
    os.close(fd)
    if not existed:
        with contextlib.suppress(OSError):
            os.unlink(p)


#: ``--percentiles`` and ``--goodput``, as ``simulate``, ``replay`` and ``bench`` take them
#: (vLLM bench's ``--metric-percentiles`` and ``--goodput``); :func:`latency_options`
#: parses what they give.
PERCENTILES_PARAM = Param(
    "percentiles",
    "str",
    "99",
    "Percentiles of TTFT, TPOT, ITL and E2E to report, e.g. 50,90,99 (as vLLM bench's "
    "--metric-percentiles; default 99; the median is always reported).",
    ("--percentiles", "--metric-percentiles"),
)
GOODPUT_PARAM = Param(
    "goodput",
    "strs",
    (),
    "Goodput SLOs in ms, NAME:MS with NAME ttft, tpot or e2el, e.g. ttft:200,tpot:50 "
    "(as vLLM bench's --goodput): requests meeting all of them, and their rate.",
    ("--goodput",),
)


def typer_option(param: Param) -> Any:
    """``typer.Option`` of a :class:`Param` declared once and shared by commands."""
    import typer

    default = list(param.default) if param.kind == "strs" else param.default
    return typer.Option(default, *param.decls, help=param.help)


def latency_options(percentiles: str, goodput: Sequence[str] | None) -> dict[str, Any]:
    """``--percentiles`` and ``--goodput`` parsed
    (:func:`kvlab.results.summary.parse_percentiles`, :func:`~kvlab.results.summary.parse_goodput`):
    ``{"percentiles": (99.0,), "goodput_slo_ms": {"ttft": 200.0} or None}``; a
    :class:`~kvlab.errors.ConfigError` naming the bad item."""
    from kvlab.results.summary import parse_goodput, parse_percentiles

    return {
        "percentiles": parse_percentiles(percentiles),
        "goodput_slo_ms": parse_goodput(list(goodput) if goodput else None),
    }


def _file_above(p: Path) -> Path | None:
    """The nearest existing ancestor of ``p`` when it is not a directory, else None."""
    for parent in p.absolute().parents:
        if parent.exists():
            return None if parent.is_dir() else parent
    return None


#: ``--dpi``, shared by every command that writes PNG figures.
DPI_HELP = (
    "Resolution of the PNG figures (dots per inch, 10 to 1200; default: each figure's "
    "own, 120, or 110 for the report's). SVG figures are vector and do not change."
)
#: ``--dpi`` for commands declared as a tuple of :class:`Param`.
DPI_PARAM = Param("dpi", "float", None, DPI_HELP, ("--dpi",))


def dpi_option() -> Any:
    """``--dpi`` for a Typer-declared command (its default argument)."""
    import typer

    return typer.Option(None, "--dpi", help=DPI_HELP)


def check_dpi(dpi: float | None) -> None:
    """Raise a one-line :class:`~kvlab.errors.ConfigError` unless ``--dpi`` is None or a
    finite number in [10, 1200]; commands call it before any work starts."""
    from kvlab.report.figure_dpi import check_dpi as check

    check(dpi)


@contextlib.contextmanager
def plot_dpi(dpi: float | None) -> Iterator[None]:
    """Write every figure drawn inside the block at ``--dpi`` (None: their defaults)."""
    from kvlab.report.figure_dpi import dpi_override

    with dpi_override(dpi):
        yield


__all__ = [
    "DPI_HELP",
    "DPI_PARAM",
    "FIGURE_SUFFIXES",
    "GOODPUT_PARAM",
    "KINDS",
    "PERCENTILES_PARAM",
    "REQUIRED",
    "Param",
    "check_dpi",
    "check_fraction",
    "check_number",
    "dpi_option",
    "echo",
    "error_line",
    "latency_options",
    "output_dir",
    "output_dir_kept",
    "output_figure",
    "output_file",
    "parse_plain",
    "plot_dpi",
    "sigint_ignored",
    "typer_command",
    "typer_option",
]
