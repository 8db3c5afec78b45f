"""What kvlab's server launchers share: a server process in its own process group, its
log file, readiness by ``/health``, and a stop that leaves nothing running (SIGTERM to the
group, then SIGKILL after ``stop_timeout_s``)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Self

from kvlab.errors import BackendUnavailable


class ServerProcess:
    """Methods over a launcher's ``_proc`` (the running process or None), ``log_path``,
    ``port``, ``url`` and ``stop_timeout_s``; ``server_name`` names it in messages and
    ``ready_timeout_s`` / ``ready_poll_s`` are its readiness defaults."""

    server_name = "server"
    ready_timeout_s = 60.0
    ready_poll_s = 0.2
    _proc: subprocess.Popen[bytes] | None
    log_path: str | Path
    port: int
    stop_timeout_s: float

    @property
    def url(self) -> str:
        raise NotImplementedError

    def start(self) -> Self:
        raise NotImplementedError

    def exit_code(self) -> int | None:
        """The server process's exit code, or None while it runs (or before start)."""
        return None if self._proc is None else self._proc.poll()

    def log_text(self) -> str:
        """Everything the server wrote to stdout and stderr so far."""
        p = Path(self.log_path)
        return p.read_text(encoding="utf-8", errors="replace") if p.exists() else ""

    def log_tail(self, num_lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-num_lines:])

    def is_healthy(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "/health", timeout=2) as r:
                return bool(r.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def wait_ready(self, timeout_s: float | None = None, poll_s: float | None = None) -> Self:
        """Block until ``/health`` answers 200; BackendUnavailable with the log tail if
        the process exits first or ``timeout_s`` passes."""
        if self._proc is None:
            raise RuntimeError("server not started")
        timeout = self.ready_timeout_s if timeout_s is None else timeout_s
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            rc = self._proc.poll()
            if rc is not None:
                raise BackendUnavailable(
                    f"{self.server_name} on port {self.port} exited with code {rc} before it "
                    f"was ready; last lines of its log:\n{self.log_tail()}"
                )
            if self.is_healthy():
                return self
            time.sleep(self.ready_poll_s if poll_s is None else poll_s)
        raise BackendUnavailable(
            f"{self.server_name} on port {self.port} not ready after {timeout:.0f} s; "
            f"last lines of its log:\n{self.log_tail()}"
        )

    def stop(self) -> None:
        """Terminate the server's whole process group (idempotent)."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        _signal_group(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=self.stop_timeout_s)
        _signal_group(proc.pid, signal.SIGKILL)
        if proc.poll() is None:
            proc.wait(timeout=5)

    @contextlib.contextmanager
    def running(self, timeout_s: float | None = None) -> Iterator[Self]:
        """Start the server, wait until it is ready, and stop it when the block ends
        (also when it never became ready)."""
        self.start()
        try:
            yield self.wait_ready(timeout_s=timeout_s)
        finally:
            self.stop()


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


__all__ = ["ServerProcess"]
