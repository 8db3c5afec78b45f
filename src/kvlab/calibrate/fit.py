"""A step cost fitted to measured runs: observations, least squares, the calibration file.

The model (one engine step, seconds, and one constant per request)::

    step_s = overhead_s + per_token_s * T + per_kv_byte_s * K_bytes
    time to first token = request_overhead_s + the steps until the first token

``T`` scheduled tokens (prefill tokens, or one per decoding sequence), ``K_bytes`` the
KV bytes the step reads (context tokens x KV bytes per token). ``request_overhead_s``
is what a request spends outside the engine's steps before its first token reaches
the client (HTTP, tokenizing, the hand-over to the engine process, the first chunk's
way back): a server's time to first token holds it once, the gaps between chunks do
not, so it is told apart from the step overhead only by fitting both kinds of
observation together. A client sees steps
only through its requests' streams, so two kinds of observation are taken from the
records of replay runs (``chunk_times_s``, ``first_token_s``, ``finish_s``):

* **decode**: the gaps between consecutive chunks of one request while no request is
  waiting for its first token (steps of decodes only). The batch is every request then
  between its first token and its finish; its context is the prompt plus the share of
  its output streamed by then. A chunk carrying several tokens spreads its gap over
  them (``(chunks - 1) / (output_tokens - 1)`` steps a gap). A request gives one
  observation, the mean over its gaps (single gaps are dominated by how the client's
  reads group chunks).
* **prefill**: the time to first token of a request that had the server to itself
  (no other request between its arrival and finish overlaps it): one step of its
  uncached prompt tokens, plus the request overhead.

The coefficients are fitted by least squares (numpy) and kept non-negative (a
coefficient that comes out negative is dropped and the rest refitted); the fit
error is reported per kind (MAPE and RMS of the residuals).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any

from kvlab.errors import ConfigError

COEFFICIENTS = ("overhead_s", "per_token_s", "per_kv_byte_s", "request_overhead_s")
#: Coefficients a calibration file may leave out (files written before they existed): 0.
OPTIONAL_COEFFICIENTS = ("request_overhead_s",)
FORMAT = "kvlab-calibration-1"


@dataclass(frozen=True, slots=True)
class Observation:
    """One measured step: ``kind`` "decode" or "prefill", its tokens, KV bytes read
    and duration in seconds, from request ``request_id`` of run ``run``."""

    kind: str
    tokens: float
    kv_bytes: float
    seconds: float
    request_id: str
    run: str = ""


@dataclass(frozen=True)
class Calibration:
    """A fitted step cost and what it was fitted on (``settings``: model, server,
    hardware, block settings of the runs), with its fit error per kind."""

    coefficients: dict[str, float]
    kv_bytes_per_token: float
    fit_error: dict[str, dict[str, float]]
    num_observations: dict[str, int]
    runs: list[str]
    settings: dict[str, Any] = field(default_factory=dict)

    def predict(self, tokens: float, kv_bytes: float, kind: str = "decode") -> float:
        """Seconds of one observation of ``kind`` ("prefill" adds the request overhead)."""
        c = self.coefficients
        step = c["overhead_s"] + c["per_token_s"] * tokens + c["per_kv_byte_s"] * kv_bytes
        return step + c["request_overhead_s"] if kind == "prefill" else step

    @property
    def error_text(self) -> str:
        """The fit error in one phrase, e.g. ``decode MAPE 4.1%, prefill MAPE 12.0%``."""
        parts = [f"{k} MAPE {v['mape'] * 100:.1f}%" for k, v in sorted(self.fit_error.items())]
        return ", ".join(parts) or "no observations"

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "model": "step_s = overhead_s + per_token_s * tokens + per_kv_byte_s * kv_bytes_read;"
            " first token after request_overhead_s + steps",
            "coefficients": dict(self.coefficients),
            "kv_bytes_per_token": self.kv_bytes_per_token,
            "fit_error": {k: dict(v) for k, v in self.fit_error.items()},
            "num_observations": dict(self.num_observations),
            "runs": list(self.runs),
            "settings": dict(self.settings),
        }


def _active(rec: Any, t: float) -> bool:
    return rec.arrival_s <= t < (rec.finish_s if rec.finish_s is not None else -math.inf)


def observations(
    records: Sequence[Any], kv_bytes_per_token: float, run: str = ""
) -> list[Observation]:
    """The decode and prefill observations of one run's records (module docstring)."""
    done = [r for r in records if r.first_token_s is not None and r.finish_s is not None]
    out: list[Observation] = []
    for r in done:
        chunks = r.chunk_times_s or []
        if len(chunks) >= 2 and r.output_tokens >= 2:
            per_gap = (len(chunks) - 1) / (r.output_tokens - 1)
            gaps: list[tuple[float, float, float]] = []
            for a, b in pairwise(chunks):
                m = (a + b) / 2
                if any(q.arrival_s <= m < q.first_token_s for q in done):
                    continue  # someone's prefill may share the step
                batch = [q for q in done if q.first_token_s <= m < q.finish_s]
                if not batch:
                    continue
                ctx = 0.0
                for q in batch:
                    span = q.finish_s - q.first_token_s
                    frac = (m - q.first_token_s) / span if span > 0 else 1.0
                    ctx += q.prompt_tokens + frac * q.output_tokens
                gaps.append((len(batch), ctx * kv_bytes_per_token, (b - a) * per_gap))
            if gaps:  # one observation a request: the mean of its decode-only gaps
                n = len(gaps)
                out.append(
                    Observation(
                        "decode",
                        sum(g[0] for g in gaps) / n,
                        sum(g[1] for g in gaps) / n,
                        sum(g[2] for g in gaps) / n,
                        r.request_id,
                        run,
                    )
                )
        alone = not any(
            q is not r and q.arrival_s < r.finish_s and r.arrival_s < q.finish_s for q in done
        )
        if alone:
            uncached = r.prompt_tokens - (r.cached_tokens or 0)
            out.append(
                Observation(
                    "prefill",
                    uncached,
                    r.prompt_tokens * kv_bytes_per_token,
                    r.first_token_s - r.arrival_s,
                    r.request_id,
                    run,
                )
            )
    return out


def _lstsq_nonneg(rows: list[list[float]], y: list[float]) -> list[float]:
    import numpy as np

    a, b = np.asarray(rows, dtype=float), np.asarray(y, dtype=float)
    keep = list(range(a.shape[1]))
    while keep:
        # scale columns so bytes and counts are comparable
        cols = a[:, keep]
        scale = np.where(np.abs(cols).max(axis=0) > 0, np.abs(cols).max(axis=0), 1.0)
        sol, *_ = np.linalg.lstsq(cols / scale, b, rcond=None)
        sol = sol / scale
        if (sol >= 0).all():
            coef = [0.0] * a.shape[1]
            for i, v in zip(keep, sol, strict=True):
                coef[i] = float(v)
            return coef
        keep.pop(int(np.argmin(sol)))
    return [0.0] * a.shape[1]


def fit(
    obs: Sequence[Observation],
    kv_bytes_per_token: float,
    *,
    runs: Sequence[str] = (),
    settings: dict[str, Any] | None = None,
) -> Calibration:
    """Least-squares coefficients for ``obs``; ConfigError when there are too few."""
    if len(obs) < len(COEFFICIENTS):
        raise ConfigError(
            f"only {len(obs)} usable step observations (need >= {len(COEFFICIENTS)}): "
            "replay more requests with streaming, some of them alone on the server"
        )
    rows = [[1.0, o.tokens, o.kv_bytes, float(o.kind == "prefill")] for o in obs]
    coef = _lstsq_nonneg(rows, [o.seconds for o in obs])
    cal = Calibration(
        dict(zip(COEFFICIENTS, coef, strict=True)),
        kv_bytes_per_token,
        {},
        {},
        list(runs),
        dict(settings or {}),
    )
    for kind in ("decode", "prefill"):
        mine = [o for o in obs if o.kind == kind]
        if not mine:
            continue
        res = [cal.predict(o.tokens, o.kv_bytes, kind) - o.seconds for o in mine]
        pos = [(abs(e), o.seconds) for e, o in zip(res, mine, strict=True) if o.seconds > 0]
        cal.fit_error[kind] = {
            "mape": sum(e / s for e, s in pos) / len(pos) if pos else 0.0,
            "rms_s": math.sqrt(sum(e * e for e in res) / len(res)),
            "bias_s": sum(res) / len(res),
        }
        cal.num_observations[kind] = len(mine)
    return cal


def load_calibration(path: str | Path) -> Calibration:
    """A calibration file written by ``kvlab calibrate``; ConfigError naming the file
    and field when it is not one."""
    p = Path(path)
    try:
        d = json.loads(p.read_text())
    except OSError as e:
        raise ConfigError(f"{p}: cannot read the calibration file ({e.strerror})") from None
    except ValueError as e:
        raise ConfigError(f"{p}: not JSON ({e})") from None
    if not isinstance(d, dict) or d.get("format") != FORMAT:
        raise ConfigError(f"{p}: not a kvlab calibration file (format {FORMAT!r} expected)")
    coef = d.get("coefficients")
    if not isinstance(coef, dict):
        raise ConfigError(f"{p}: field 'coefficients' must be an object")
    for k in COEFFICIENTS:
        if k in OPTIONAL_COEFFICIENTS and k not in coef:
            continue
        v = coef.get(k)
        if not isinstance(v, int | float) or isinstance(v, bool) or not math.isfinite(v) or v < 0:
            raise ConfigError(f"{p}: field 'coefficients.{k}' must be a finite number >= 0")
    bpt = d.get("kv_bytes_per_token")
    if not isinstance(bpt, int | float) or isinstance(bpt, bool) or not bpt > 0:
        raise ConfigError(f"{p}: field 'kv_bytes_per_token' must be a number > 0")
    return Calibration(
        {k: float(coef.get(k, 0.0)) for k in COEFFICIENTS},
        float(bpt),
        dict(d.get("fit_error") or {}),
        dict(d.get("num_observations") or {}),
        list(d.get("runs") or []),
        dict(d.get("settings") or {}),
    )


__all__ = ["COEFFICIENTS", "Calibration", "Observation", "fit", "load_calibration", "observations"]
