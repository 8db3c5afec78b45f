"""What every bench experiment returns and writes: points, run directories, figures.

An experiment directory holds one RunResult directory per run (see
:mod:`kvlab.results`), the figures (PNG + SVG) and ``experiment.json``: the
experiment's name, backend, model, parameters, points and file lists.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kvlab.bench.target import Target
from kvlab.results import RunResult, atomic_write_text

#: Called after each run with (label, run index, number of runs).
Progress = Callable[[str, int, int], None]


@dataclass
class ExperimentResult:
    """The outcome of one experiment (see the module docstring)."""

    name: str
    backend: str
    model: str
    params: dict[str, Any]
    points: list[dict[str, Any]] = field(default_factory=list)
    run_dirs: list[Path] = field(default_factory=list)
    figures: list[Path] = field(default_factory=list)

    @property
    def title(self) -> str:
        return f"{self.model} on {self.backend}"

    def save(self, out_dir: Path) -> Path:
        path = out_dir / "experiment.json"
        doc = {
            "experiment": self.name,
            "backend": self.backend,
            "model": self.model,
            "params": self.params,
            "points": self.points,
            "runs": [str(p.relative_to(out_dir)) for p in self.run_dirs],
            "figures": [str(p.relative_to(out_dir)) for p in self.figures],
        }
        atomic_write_text(path, json.dumps(doc, indent=2, default=str) + "\n")
        return path


def save_run(result: RunResult, out_dir: Path, label: str, exp: ExperimentResult) -> Path:
    """Save one run under ``runs/``. A live run that Ctrl-C stopped (its backend ends
    it gracefully) is saved marked interrupted, and then KeyboardInterrupt ends the
    experiment as it would have anywhere else."""
    if result.summary.get("stopped") == "interrupted":
        result.status = "interrupted"
        result.save(out_dir / "runs" / label)
        raise KeyboardInterrupt
    d = result.save(out_dir / "runs" / label)
    exp.run_dirs.append(d)
    return d


def start(name: str, target: Target, params: dict[str, Any]) -> ExperimentResult:
    return ExperimentResult(
        name=name, backend=target.backend, model=target.model_label, params=params
    )


__all__ = ["ExperimentResult", "Progress", "save_run", "start"]
