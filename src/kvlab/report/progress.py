"""Progress as plain lines, for long commands whose output is not a terminal.

A progress bar redraws one line in place and is useless in a log file or a
pipe (and Rich draws nothing there): :class:`LineProgress` prints
``LABEL: DONE/TOTAL (PCT%)`` on stderr each time another tenth of the work is
done or ``every_s`` seconds have passed since the last line, whichever comes
first, and always for the last item; nothing else, so a log grows by a dozen
lines per command, not one per request.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import TextIO

#: Seconds between two lines at most (when something was done in between).
EVERY_S = 5.0
#: Fraction of the work between two lines at most.
EVERY_FRACTION = 0.1


class LineProgress:
    """Line-based progress of ``total`` items (None: unknown) on ``stream``."""

    def __init__(
        self,
        label: str,
        total: int | None,
        *,
        stream: TextIO | None = None,
        every_s: float = EVERY_S,
        every_fraction: float = EVERY_FRACTION,
    ) -> None:
        self.label = label
        self.total = total
        self.stream = stream if stream is not None else sys.stderr
        self.every_s = every_s
        self.every_fraction = every_fraction
        self.done = 0
        self._last_done = 0
        self._last_t = time.monotonic()

    def update(self, done: int, total: int | None = None, label: str | None = None) -> None:
        """``done`` items of ``total`` (as before when None) are finished."""
        if total is not None:
            self.total = total
        if label is not None:
            self.label = label
        self.done = done
        now = time.monotonic()
        step = self.every_fraction * self.total if self.total else None
        last = self.total is not None and done >= self.total
        due = (
            last
            or now - self._last_t >= self.every_s
            or (step is not None and done - self._last_done >= step)
        )
        if due and done != self._last_done:
            self._last_done, self._last_t = done, now
            self.stream.write(self._line() + "\n")
            self.stream.flush()

    def advance(self, n: int = 1) -> None:
        self.update(self.done + n)

    def _line(self) -> str:
        if not self.total:
            return f"{self.label}: {self.done}"
        return f"{self.label}: {self.done}/{self.total} ({100 * self.done / self.total:.0f}%)"


def default_out(command: str) -> Path:
    """``runs/COMMAND-YYYYmmdd-HHMMSS`` (local time) when ``--out`` is omitted, printed
    on stderr so that the user knows where the results go."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = Path("runs") / f"{command}-{stamp}"
    n = 1
    while out.exists():
        n += 1
        out = Path("runs") / f"{command}-{stamp}-{n}"
    print(f"writing to {out}", file=sys.stderr)
    return out


def piped() -> bool:
    """True when stdout or stderr is not a terminal (a log file, a pipe, CI): a
    progress bar would not show, or would garble the log."""
    return not (sys.stdout.isatty() and sys.stderr.isatty())


__all__ = ["EVERY_FRACTION", "EVERY_S", "LineProgress", "default_out", "piped"]
