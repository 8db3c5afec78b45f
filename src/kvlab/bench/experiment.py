"""What every bench experiment returns and writes: points, run directories, figures.

An experiment directory holds one RunResult directory per run (see
:mod:`kvlab.results`), the figures (PNG + SVG), ``experiment.json``: the
experiment's name, backend, model, parameters, points and file lists, and
``points.csv``: the same points, one row each, nested figures flattened to
dotted columns (``ttft_s.p99``), an empty cell where a point has no value.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Mapping, Sequence
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
        atomic_write_text(out_dir / "points.csv", points_csv(self.points))
        return path


def _flat(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, Mapping):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def points_csv(points: Sequence[Mapping[str, Any]]) -> str:
    """``points`` as CSV: one row per point, columns in first-seen order, nested
    figures as dotted columns, None as an empty cell."""
    rows = [_flat(p) for p in points]
    cols: dict[str, None] = {}
    for r in rows:
        cols.update(dict.fromkeys(r))
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(cols)
    for r in rows:
        w.writerow(["" if r.get(c) is None else r[c] for c in cols])
    return buf.getvalue()


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


__all__ = ["ExperimentResult", "Progress", "points_csv", "save_run", "start"]
