"""``kvlab simulate --serve-metrics PORT [--speed X]``: the run, then its replay as a
vLLM ``/metrics`` endpoint (:mod:`kvlab.monitor.sim_metrics`).

The simulation runs once at full speed (its results are written as usual), with
the engine's state kept after every event; the endpoint then replays that
timeline on the wall clock, ``speed`` simulated seconds per wall second, and
keeps serving the final state after the end until Ctrl-C (so that a scraper
sees alerts resolve).
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from kvlab.errors import ConfigError


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


@dataclass
class ServeOptions:
    """Where and how fast to serve; :meth:`recorder` runs the simulation, :meth:`run` serves."""

    port: int
    speed: float = 1.0
    addr: str = "127.0.0.1"
    progress_every_s: float = 5.0
    timeline: Any = field(default=None, init=False)

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"--serve-metrics must be a port 0-65535, got {self.port}")
        if not self.speed > 0 or self.speed != self.speed or self.speed == float("inf"):
            raise ConfigError(f"--speed must be a positive number, got {self.speed}")

    def recorder(self) -> Any:
        """A ``simulate(workload, cfg, progress=None)`` that also keeps the timeline."""
        from kvlab.monitor.sim_metrics import record_run

        def simulate(workload: Any, cfg: Any, progress: Any = None) -> Any:
            result, self.timeline = record_run(workload, cfg, progress)
            return result

        return simulate

    def run(self, *, quiet: bool = False) -> None:
        """Serve the recorded timeline (see the module); returns on Ctrl-C."""
        from kvlab.monitor.sim_metrics import MetricsReplay

        assert self.timeline is not None, "recorder() ran no simulation"
        replay = MetricsReplay(self.timeline)
        server, port = replay.serve(self.port, self.addr)
        total = self.timeline.duration_s
        _say(
            f"serving vLLM metrics of the simulation on http://{self.addr}:{port}/metrics "
            f"({total:,.1f} simulated s at x{self.speed:g}: {total / self.speed:,.1f} s of "
            "wall time; Ctrl-C stops)"
        )
        last = [time.monotonic()]

        def progress(sim_t: float) -> None:
            now = time.monotonic()
            if not quiet and now - last[0] >= self.progress_every_s:
                last[0] = now
                _say(f"replay: {min(sim_t, total):,.1f} / {total:,.1f} simulated s")

        stop = threading.Event()
        previous = _on_sigint(stop)
        try:
            replay.replay(self.speed, on_tick=progress, sleep=stop.wait, stopped=stop.is_set)
            if not stop.is_set():
                _say("replay finished; serving the final state until Ctrl-C")
            while not stop.wait(3600):
                pass
            _say("stopped")
        except KeyboardInterrupt:  # SIGINT while no handler of ours was in place
            _say("stopped")
        finally:
            if previous is not None:
                signal.signal(signal.SIGINT, previous)
            server.shutdown()
            server.server_close()


def _on_sigint(stop: threading.Event) -> Any:
    """Let Ctrl-C set ``stop`` instead of raising KeyboardInterrupt wherever the replay is
    (inside a metric's lock, say), so that the server always stops cleanly; returns
    the previous handler (None when this is not the main thread: Ctrl-C then raises)."""
    try:
        return signal.signal(signal.SIGINT, lambda signum, frame: stop.set())
    except ValueError:
        return None


__all__ = ["ServeOptions"]
