"""What every bench experiment returns and writes: points, run directories, figures.

An experiment directory holds one RunResult directory per run (see
:mod:`kvlab.results`), the figures (PNG + SVG), ``experiment.json``: the
experiment's name, backend, model, parameters, points and file lists, and
``points.csv``: the same points, one row each, nested figures flattened to
dotted columns (``ttft_s.p99``), an empty cell where a point has no value.

Latency options (``kvlab bench --percentiles/--goodput``, as ``simulate`` and
``replay`` take them) reach every run: its summary's ``latency_percentiles_s``
and ``goodput`` are computed for them, each run directory gets
``vllm_bench.json`` (vLLM bench's keys, in ms), and every point carries the
run's ``latency_percentiles_s`` and, with SLOs, its ``goodput``.
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
    #: ``{"percentiles": (99.0,), "goodput_slo_ms": None}`` (see
    #: :func:`kvlab.cli.options.latency_options`); empty: the defaults.
    latency: dict[str, Any] = field(default_factory=dict)

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
            "percentiles": list(self._percentiles()),
            "goodput_slo_ms": self.latency.get("goodput_slo_ms"),
            "points": self.points,
            "runs": [str(p.relative_to(out_dir)) for p in self.run_dirs],
            "figures": [str(p.relative_to(out_dir)) for p in self.figures],
        }
        atomic_write_text(path, json.dumps(doc, indent=2, default=str) + "\n")
        atomic_write_text(out_dir / "points.csv", points_csv(self.points))
        return path

    def _percentiles(self) -> tuple[float, ...]:
        from kvlab.results.summary import DEFAULT_PERCENTILES

        return tuple(self.latency.get("percentiles") or DEFAULT_PERCENTILES)

    def with_latency(self, result: RunResult) -> None:
        """Recompute ``result``'s latency figures for this experiment's percentiles and
        goodput SLOs (its backend computed them for the defaults)."""
        from kvlab.results.summary import DEFAULT_PERCENTILES, latency_figures

        qs, slo = self._percentiles(), self.latency.get("goodput_slo_ms")
        s = result.summary
        if qs == tuple(DEFAULT_PERCENTILES) and not slo and "latency_percentiles_s" in s:
            return  # the backend's own figures are these
        s.update(
            latency_figures(
                result.records,
                duration_s=s.get("simulated_duration_s"),
                percentiles=qs,
                goodput_slo_ms=slo,
            )
        )

    def vllm_bench(self, result: RunResult) -> dict[str, Any]:
        """``result`` in vLLM bench's keys and units (``vllm_bench.json``)."""
        from kvlab.results.summary import vllm_bench_metrics

        return vllm_bench_metrics(
            result.summary,
            result.records,
            percentiles=self._percentiles(),
            goodput_slo_ms=self.latency.get("goodput_slo_ms"),
        )


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
    experiment as it would have anywhere else. The run's latency figures follow the
    experiment's percentiles and SLOs, and ``vllm_bench.json`` is written beside its
    ``summary.json``."""
    exp.with_latency(result)
    if result.summary.get("stopped") == "interrupted":
        result.status = "interrupted"
        _save_with_export(result, out_dir / "runs" / label, exp)
        raise KeyboardInterrupt
    d = _save_with_export(result, out_dir / "runs" / label, exp)
    exp.run_dirs.append(d)
    return d


def _save_with_export(result: RunResult, where: Path, exp: ExperimentResult) -> Path:
    d = result.save(where)
    atomic_write_text(d / "vllm_bench.json", json.dumps(exp.vllm_bench(result), indent=2) + "\n")
    return d


def start(
    name: str,
    target: Target,
    params: dict[str, Any],
    latency: Mapping[str, Any] | None = None,
) -> ExperimentResult:
    """A new experiment; ``latency``: ``--percentiles``/``--goodput`` parsed
    (:func:`kvlab.cli.options.latency_options`), None for the defaults."""
    return ExperimentResult(
        name=name,
        backend=target.backend,
        model=target.model_label,
        params=params,
        latency=dict(latency or {}),
    )


__all__ = ["ExperimentResult", "Progress", "points_csv", "save_run", "start"]
