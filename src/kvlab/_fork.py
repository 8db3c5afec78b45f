"""Work in a forked child process: the second core of a run, where ``os.fork`` exists."""

from __future__ import annotations

import os
from collections.abc import Callable


def can_fork() -> bool:
    """Whether this process may fork a child that runs Python code: ``os.fork``
    exists and no other thread runs (one could hold a lock the child needs)."""
    import threading

    return hasattr(os, "fork") and threading.active_count() == 1


def fork_call(fn: Callable[[], object]) -> int | None:
    """Run ``fn`` in a forked child, which then leaves without any interpreter
    teardown (exit status 0 if ``fn`` returned, 1 if it raised). Returns the
    child's pid, or None when ``os.fork`` is missing or fails."""
    fork = getattr(os, "fork", None)
    if fork is None:
        return None
    try:
        pid = fork()
    except OSError:
        return None
    if pid == 0:
        code = 1
        try:
            fn()
            code = 0
        finally:
            os._exit(code)
    return pid
