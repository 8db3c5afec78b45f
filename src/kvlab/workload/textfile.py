"""Workload and trace files opened as UTF-8 text, plain or gzip-compressed.

Every reader of a workload or trace goes through :func:`open_text` inside
:func:`read_errors`, so a file that cannot be read as text fails the same way
in every command: a :class:`~kvlab.errors.WorkloadError` naming the file (and,
for bytes that are not UTF-8, the 1-based line that holds them). The cases: no
such file, a directory, a file without read permission, a ``.gz`` file that
is not gzip, a truncated or corrupt gzip stream, bytes that are not UTF-8,
and (:func:`check_regular`, before anything opens it) a FIFO, a device or a
socket: opening a FIFO nobody writes to blocks forever, and a device such as
``/dev/zero`` never ends. A path ending in ``.gz`` is gzip; any other path is
read as it is.
"""

from __future__ import annotations

import gzip
import stat
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from kvlab.errors import WorkloadError


def is_gzip(p: Path) -> bool:
    """True when ``p`` is read and written gzip-compressed (its name ends in ``.gz``)."""
    return p.suffix == ".gz"


def check_regular(p: Path) -> None:
    """Raise :class:`~kvlab.errors.WorkloadError` when ``p`` exists (through its
    symlinks) and is a FIFO, a device or a socket rather than a regular file or a
    directory; anything else (missing, a symlink loop...) is left to the reader's
    own error."""
    try:
        mode = p.stat().st_mode
    except (OSError, ValueError):
        return
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return
    if stat.S_ISFIFO(mode):
        kind = "a FIFO (named pipe)"
    elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        kind = "a device"
    elif stat.S_ISSOCK(mode):
        kind = "a socket"
    else:
        kind = "not a regular file"
    raise WorkloadError(
        f"is {kind}, not a regular file: it could block or never end; give a workload "
        "or trace file",
        path=p,
    )


def open_text(p: Path, mode: str = "r", gz: bool | None = None) -> IO[str]:
    """``p`` opened as UTF-8 text in ``mode`` (``"r"`` or ``"w"``); gzip when ``gz``
    (default: :func:`is_gzip`). A FIFO, device or socket is refused before it is
    opened for reading (:func:`check_regular`)."""
    if "r" in mode:
        check_regular(p)
    if gz if gz is not None else is_gzip(p):
        return gzip.open(p, mode + "t", encoding="utf-8")  # type: ignore[return-value]
    return p.open(mode, encoding="utf-8")


@contextmanager
def read_errors(p: Path) -> Iterator[None]:
    """Turn an error of reading ``p`` into a WorkloadError naming it (see the module docstring)."""
    try:
        yield
    except FileNotFoundError:
        raise WorkloadError("no such file", path=p) from None
    except IsADirectoryError:
        raise WorkloadError("is a directory; give a workload or trace file", path=p) from None
    except UnicodeDecodeError as e:
        line = first_undecodable_line(p)
        raise WorkloadError(f"not UTF-8 text: {e.reason}", path=p, line=line) from None
    except gzip.BadGzipFile as e:
        raise WorkloadError(f"not a valid gzip file: {e}", path=p) from None
    except EOFError:
        raise WorkloadError(
            "the gzip file is truncated (it ends before its end-of-stream marker)", path=p
        ) from None
    except zlib.error as e:
        raise WorkloadError(f"corrupt gzip data: {e}", path=p) from None
    except OSError as e:
        raise WorkloadError(f"cannot read: {e.strerror or e}", path=p) from None


def first_undecodable_line(p: Path) -> int | None:
    """The 1-based number of the first line of ``p`` that is not UTF-8; None if none is found
    (or the file cannot be read again)."""
    try:
        opener = gzip.open if is_gzip(p) else open
        with opener(p, "rb") as f:
            for i, raw in enumerate(f, start=1):
                try:
                    raw.decode("utf-8")
                except UnicodeDecodeError:
                    return i
    except (OSError, EOFError, zlib.error):
        return None
    return None


__all__ = ["check_regular", "first_undecodable_line", "is_gzip", "open_text", "read_errors"]
