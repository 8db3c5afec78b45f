"""Exceptions raised by kvlab.

Every error a caller can cause derives from :class:`KvlabError` and carries a
message that says what to do. Broken internal invariants are ``AssertionError``
or ``RuntimeError`` instead, never a ``KvlabError``.

::

    KvlabError
    ├── ConfigError          a bad option or value (CLI exit code 2)
    ├── WorkloadError        bad workload or trace input, with file and line
    │   └── RunDirError          an unreadable, corrupt or partial run directory
    ├── CapacityError        the KV cache cannot hold what was asked
    ├── Interrupted          Ctrl-C: the work stopped, what finished is on disk (exit 130)
    ├── BackendError         a backend failed
    │   ├── ServerError          the server answered an error (4xx/5xx)
    │   ├── ContextOverflow      the request exceeds the model's context
    │   └── BackendUnavailable   the server cannot be reached
    └── DependencyMissing    an optional dependency is not installed
"""

from __future__ import annotations

from pathlib import Path


class KvlabError(Exception):
    """Base class of every error a kvlab user can cause."""

    exit_code: int = 1


class ConfigError(KvlabError, ValueError):
    """An option or configuration value is invalid."""

    exit_code = 2


class OutputError(KvlabError, OSError):
    """A file or directory kvlab was asked to write cannot be written (the line names
    the path and the system's reason)."""

    exit_code = 2


class WorkloadError(KvlabError, ValueError):
    """A workload or trace file is malformed.

    ``path`` and ``line`` (1-based) locate the problem when known; ``field``
    names the offending field.
    """

    exit_code = 2

    def __init__(
        self,
        message: str,
        *,
        path: str | Path | None = None,
        line: int | None = None,
        field: str | None = None,
    ) -> None:
        self.path = None if path is None else str(path)
        self.line = line
        self.field = field
        where = ""
        if self.path is not None:
            where = self.path if line is None else f"{self.path}:{line}"
        prefix = f"{where}: " if where else ""
        if field is not None:
            prefix += f"field {field!r}: "
        super().__init__(prefix + message)


class RunDirError(WorkloadError):
    """A run directory (``summary.json``, ``requests.jsonl`` ...) cannot be read as one:
    a file is missing, not text, not JSON, or not of the expected shape. Located
    like :class:`WorkloadError` (file, line, field); kvlab's input either way."""


class CapacityError(KvlabError):
    """The KV cache (or GPU memory) cannot hold what was asked."""

    exit_code = 2


class Interrupted(KvlabError):
    """Ctrl-C (SIGINT) stopped a command after it wrote what had finished.

    The message says where that is (one line, printed without the ``error:``
    prefix); the exit code is 130, as a shell reports a process ended by SIGINT.
    """

    exit_code = 130


class BackendError(KvlabError):
    """A measurement backend failed."""


class ServerError(BackendError):
    """The server answered with an error status."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        self.status = status
        super().__init__(message)


class ContextOverflow(ServerError):
    """The request does not fit in the model's context window."""


class BackendUnavailable(BackendError):
    """The server or library backing a backend cannot be reached."""


class DependencyMissing(KvlabError, ImportError):
    """An optional dependency is missing; the message gives the install command."""

    def __init__(self, package: str, extra: str) -> None:
        self.package = package
        self.extra = extra
        super().__init__(
            f"{package} is not installed; install it with: pip install 'kvlab[{extra}]'"
        )


__all__ = [
    "BackendError",
    "BackendUnavailable",
    "CapacityError",
    "ConfigError",
    "ContextOverflow",
    "DependencyMissing",
    "Interrupted",
    "KvlabError",
    "RunDirError",
    "ServerError",
    "WorkloadError",
]
