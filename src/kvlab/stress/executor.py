"""Where a stress run's independent tasks run: in this process, or on a Dask cluster.

An executor maps a picklable task function over a list of items and returns one
:class:`Outcome` per item, **in item order**, whatever order they finished in, so a
run's results do not depend on the executor (``tests/stress/test_executor.py`` checks
``stress.json`` byte for byte). A task that raises is run once more; if it fails
again its outcome carries the error and the run goes on. ``on_done`` is called as each
task finishes (progress). Ctrl-C (KeyboardInterrupt) stops launching tasks: the
executor cancels what has not finished and re-raises, after ``on_done`` has seen every
finished task, so the caller keeps them.

* ``local`` (default): every task in this process, one after another, sharing one
  :class:`~kvlab.stress.scenario.WorkloadCache` (a workload prepared once is reused
  across parts).
``kvlab sweep --executor dask`` runs its points the same way
(:meth:`DaskExecutor.point_runner`).

* ``dask``: tasks are submitted to a ``distributed`` cluster: ``address`` (a
  scheduler's ``tcp://host:port``) or, without one, a local cluster of ``workers``
  single-threaded worker processes started for the run and closed after it. Each task
  prepares its own workloads. Needs the ``dask`` extra (``pip install 'kvlab[dask]'``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

EXECUTORS = ("local", "dask")


@dataclass(frozen=True)
class Outcome:
    """One task's result (``value``) or its error after ``attempts`` tries."""

    index: int
    value: Any = None
    error: str | None = None
    attempts: int = 1

    @property
    def ok(self) -> bool:
        return self.error is None


class _Closing:
    """An executor has ``close()``: use ``contextlib.closing(executor)`` in a ``with``."""

    def close(self) -> None:
        pass


class LocalExecutor(_Closing):
    """Every task in this process, in order; ``cache`` is passed to each task."""

    name = "local"

    def __init__(self) -> None:
        from kvlab.stress.scenario import WorkloadCache

        self.cache = WorkloadCache()

    def map(
        self,
        fn: Callable[[Any, Any], Any],
        items: Sequence[Any],
        on_done: Callable[[Outcome], None] | None = None,
    ) -> list[Outcome]:
        out = []
        for i, item in enumerate(items):
            o = _attempts(fn, item, self.cache, i)
            out.append(o)
            if on_done is not None:
                on_done(o)
        return out

    @property
    def num_prepared(self) -> int:
        return self.cache.num_prepared


def _attempts(fn: Callable[[Any, Any], Any], item: Any, cache: Any, i: int) -> Outcome:
    error = ""
    for attempt in (1, 2):
        try:
            return Outcome(i, fn(item, cache), None, attempt)
        except KeyboardInterrupt:
            raise
        except Exception as e:  # a failed task is retried once, then reported
            error = f"{type(e).__name__}: {e}"
    return Outcome(i, None, error, 2)


def _remote(fn: Callable[[Any, Any], Any], item: Any) -> Any:
    """What a Dask worker runs: the task with a cache of its own."""
    return fn(item, None)


class DaskExecutor(_Closing):
    """Tasks on a ``distributed`` cluster (see the module docstring)."""

    name = "dask"

    def __init__(self, address: str | None = None, workers: int = 2) -> None:
        try:
            from distributed import Client, LocalCluster
        except ImportError:
            from kvlab.errors import DependencyMissing

            raise DependencyMissing("dask distributed", "dask") from None
        self._cluster = None
        if address is None:
            self._cluster = LocalCluster(
                n_workers=workers,
                threads_per_worker=1,
                processes=True,
                dashboard_address=":0",
                silence_logs=40,
            )
            self.client = Client(self._cluster)
        else:
            try:
                self.client = Client(address, timeout=10)
            except OSError as e:
                from kvlab.errors import BackendUnavailable

                raise BackendUnavailable(f"no Dask scheduler at {address}: {e}") from None

    #: Workloads are prepared on the workers and not counted.
    num_prepared = None

    def map(
        self,
        fn: Callable[[Any, Any], Any],
        items: Sequence[Any],
        on_done: Callable[[Outcome], None] | None = None,
    ) -> list[Outcome]:
        from distributed import as_completed

        futures = {
            self.client.submit(_remote, fn, item, pure=False): (i, 1)
            for i, item in enumerate(items)
        }
        results: dict[int, Outcome] = {}
        pending = as_completed(list(futures))
        try:
            for fut in pending:
                i, attempt = futures[fut]
                if fut.status == "finished":
                    o = Outcome(i, fut.result(), None, attempt)
                elif attempt == 1:  # retry once
                    again = self.client.submit(_remote, fn, items[i], pure=False)
                    futures[again] = (i, 2)
                    pending.add(again)
                    continue
                else:
                    exc = fut.exception()
                    o = Outcome(i, None, f"{type(exc).__name__}: {exc}", attempt)
                results[i] = o
                if on_done is not None:
                    on_done(o)
        except KeyboardInterrupt:
            for f in futures:
                f.cancel()
            raise
        return [results[i] for i in range(len(items))]

    def point_runner(self, runner: Callable[..., None]) -> Callable[..., None]:
        """A ``kvlab sweep`` point runner that runs ``runner`` on the cluster, retried once.

        The point's run directory is written by the worker, so the workers must see the
        sweep's output directory (a local cluster, or a shared file system)."""
        client = self.client

        def run(*args: Any) -> None:
            for attempt in (1, 2):
                try:
                    client.submit(runner, *args, pure=False).result()
                    return
                except Exception:
                    if attempt == 2:
                        raise

        return run

    def close(self) -> None:
        self.client.close()
        if self._cluster is not None:
            self._cluster.close()


def make_executor(name: str, address: str | None = None, workers: int = 2) -> Any:
    from kvlab.errors import ConfigError

    if name == "local":
        if address is not None:
            raise ConfigError("--scheduler needs --executor dask")
        return LocalExecutor()
    if name == "dask":
        if workers < 1:
            raise ConfigError(f"--workers must be >= 1, got {workers}")
        return DaskExecutor(address, workers)
    raise ConfigError(f"unknown executor {name!r}; choose one of {', '.join(EXECUTORS)}")
