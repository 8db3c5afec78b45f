"""The simulator as a backend: :func:`kvlab.sim.engine.simulate` behind the Backend protocol."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from kvlab.results import RunResult
    from kvlab.sim.config import SimConfig
    from kvlab.sim.engine import Progress
    from kvlab.workload.records import Workload


@dataclass(frozen=True)
class SimBackend:
    """Simulates a workload with ``config`` (see :class:`kvlab.sim.config.SimConfig`)."""

    config: SimConfig
    name: ClassVar[str] = "sim"

    def run(self, workload: Workload, *, progress: Progress | None = None) -> RunResult:
        from kvlab.sim.engine import simulate

        return simulate(workload, self.config, progress)


__all__ = ["SimBackend"]
