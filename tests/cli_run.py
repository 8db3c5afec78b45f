"""Run the kvlab command line in-process as a user's shell would, and capture what it printed.

:func:`run_cli` calls :func:`kvlab.cli.app.main` (the console entry's error handling:
a KvlabError becomes one line and its exit code), captures stdout and stderr, and turns
an exception that escapes ``main`` into its traceback text, so a test can assert that no
input ends in a traceback.
"""

from __future__ import annotations

import contextlib
import io
import signal
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass


class Hang(BaseException):
    """Raised in a run that passed its time limit (a BaseException, so no handler in
    kvlab that catches Exception can swallow it)."""


@dataclass(frozen=True)
class CliRun:
    """One in-process run: exit code, stdout, stderr, wall seconds."""

    code: int
    out: str
    err: str
    wall_s: float
    hung: bool = False

    @property
    def traceback(self) -> bool:
        """True when the output holds a Python traceback."""
        return "Traceback (most recent call last)" in self.out + self.err

    def one_line_error(self) -> str:
        """The stderr of a failed run, checked to be one ``error: ...`` line."""
        lines = [x for x in self.err.splitlines() if x.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: "), self.err
        return lines[0]


@contextlib.contextmanager
def _time_limit(seconds: float | None) -> Iterator[None]:
    """Raise :class:`Hang` in the main thread after ``seconds`` (None: no limit)."""
    if seconds is None:
        yield
        return

    def fire(signum: int, frame: object) -> None:
        raise Hang(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def run_cli(argv: list[str], limit_s: float | None = None) -> CliRun:
    """Run ``kvlab ARGV`` in this process; see the module docstring. With ``limit_s`` a run
    still going after that many seconds is stopped and marked ``hung``."""
    from kvlab.cli.app import main

    out, err = io.StringIO(), io.StringIO()
    code = 0
    hung = False
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            with _time_limit(limit_s):
                main(argv)
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        except Hang:
            hung, code = True, -1
        except BaseException:  # what a shell would show as a traceback
            err.write(traceback.format_exc())
            code = 1
    return CliRun(code, out.getvalue(), err.getvalue(), time.perf_counter() - t0, hung)
