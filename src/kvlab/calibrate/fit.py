"""A step cost fitted to measured runs: observations, least squares, the calibration file.

The model (one engine step, seconds, and one constant per request)::

    step_s = overhead_s + per_seq_s * S + per_token_s * T + per_kv_byte_s * K_bytes
             + per_attn_pair_s * A
    time to first token = request_overhead_s + the steps until the first token

``S`` sequences in the step, ``T`` scheduled tokens (prefill tokens, or one per
decoding sequence: a decode is one of each), ``K_bytes`` the
KV bytes the step reads (context tokens x KV bytes per token), ``A`` the attention
pairs as the engine counts them (each sequence's new tokens x its context: a decode's
context, so in decode steps ``A`` moves with ``K_bytes``; a prefill of ``u`` tokens
onto ``c`` cached ones ``u x (c + u)``, the term that grows with the square of the
prompt). ``per_seq_s`` is what a sequence costs whatever its token count (its
sampling, its output's way through the server: on vLLM's CPU build a decoding sequence
costs more than twice what one more prefill token does, so one per-token cost cannot
fit both). ``request_overhead_s``
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

Which terms a set of observations can tell apart depends on how it varies: prompts
of one length leave the per-token cost inseparable from the overheads, one batch
size the per-sequence decode cost. :func:`fit` says so (``Calibration.notes``) for
every coefficient whose column the others explain; the designed sweep of
:mod:`kvlab.calibrate.sweep` varies prompt length and batch size independently.

The fit minimises relative residuals (a 5 ms decode step counts as much as a 500 ms
prefill) with Huber weights (scale: the residuals' median absolute deviation), then
refits without the observations beyond :data:`TRIM_K` scales, so steps slowed by
another process on a shared machine do not pull the coefficients; coefficients are
kept non-negative (one that comes out negative is dropped and the rest refitted).
The fit error is reported per kind (MAPE, RMS and bias of the residuals) and the
residuals per kind and size (:func:`residuals`).
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

COEFFICIENTS = (
    "overhead_s",
    "per_token_s",
    "per_kv_byte_s",
    "request_overhead_s",
    "per_attn_pair_s",
    "per_seq_s",
)
#: Coefficients a calibration file may leave out (files written before they existed): 0.
OPTIONAL_COEFFICIENTS = ("request_overhead_s", "per_attn_pair_s", "per_seq_s")
#: with fewer observations than coefficients, these are left out (0), in this order
LAST_FITTED = ("per_seq_s", "per_attn_pair_s")
#: Huber's constant (in units of the residuals' robust scale)
HUBER_K = 1.345
#: after the Huber fit, residuals beyond this many robust scales are left out ...
TRIM_K = 4.0
#: ... unless that would leave out more than this share of one kind's observations
TRIM_MAX = 0.25
FORMAT = "kvlab-calibration-1"


@dataclass(frozen=True, slots=True)
class Observation:
    """One measured step: ``kind`` "decode" or "prefill", its tokens, KV bytes read
    and duration in seconds, from request ``request_id`` of run ``run``, its
    attention pairs (``attn_pairs``, see the module docstring) and sequences
    (``seqs``; None: one a token for a decode, one for a prefill)."""

    kind: str
    tokens: float
    kv_bytes: float
    seconds: float
    request_id: str
    run: str = ""
    attn_pairs: float = 0.0
    seqs: float | None = None

    @property
    def num_seqs(self) -> float:
        """The step's sequences (``seqs``, or what its kind implies)."""
        if self.seqs is not None:
            return self.seqs
        return self.tokens if self.kind == "decode" else 1.0


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
    #: what the observations could not tell apart (one line each)
    notes: list[str] = field(default_factory=list)
    #: residuals per kind and size (:func:`residuals`)
    residuals: list[dict[str, Any]] = field(default_factory=list)

    def predict(
        self,
        tokens: float,
        kv_bytes: float,
        kind: str = "decode",
        attn_pairs: float = 0.0,
        seqs: float | None = None,
    ) -> float:
        """Seconds of one observation of ``kind`` ("prefill" adds the request overhead)
        of ``seqs`` sequences (None: one a token for a decode, one for a prefill)."""
        c = self.coefficients
        if seqs is None:
            seqs = tokens if kind == "decode" else 1.0
        step = (
            c["overhead_s"]
            + c["per_seq_s"] * seqs
            + c["per_token_s"] * tokens
            + c["per_kv_byte_s"] * kv_bytes
            + c["per_attn_pair_s"] * attn_pairs
        )
        return step + c["request_overhead_s"] if kind == "prefill" else step

    def predict_obs(self, o: Observation) -> float:
        """Seconds :meth:`predict` gives observation ``o``."""
        return self.predict(o.tokens, o.kv_bytes, o.kind, o.attn_pairs, o.num_seqs)

    @property
    def model_text(self) -> str:
        """The fitted step in one line, e.g. ``step_s = 1.78 ms + 0.033 ms x sequences + ...;
        request overhead 5.41 ms``."""
        c = self.coefficients
        return (
            f"step_s = {c['overhead_s'] * 1e3:.4g} ms + {c['per_seq_s'] * 1e3:.4g} ms x "
            f"sequences + {c['per_token_s'] * 1e3:.4g} ms x tokens + {c['per_kv_byte_s']:.3g} s "
            f"x KV bytes read + {c['per_attn_pair_s']:.3g} s x attention pairs; request "
            f"overhead {c['request_overhead_s'] * 1e3:.4g} ms before the first token"
        )

    @property
    def error_text(self) -> str:
        """The fit error in one phrase, e.g. ``decode MAPE 4.1%, prefill MAPE 12.0%``."""
        parts = [f"{k} MAPE {v['mape'] * 100:.1f}%" for k, v in sorted(self.fit_error.items())]
        return ", ".join(parts) or "no observations"

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "model": "step_s = overhead_s + per_seq_s * sequences + per_token_s * tokens"
            " + per_kv_byte_s * kv_bytes_read + per_attn_pair_s * attention_pairs;"
            " first token after request_overhead_s + steps",
            "coefficients": dict(self.coefficients),
            "kv_bytes_per_token": self.kv_bytes_per_token,
            "fit_error": {k: dict(v) for k, v in self.fit_error.items()},
            "num_observations": dict(self.num_observations),
            "runs": list(self.runs),
            "settings": dict(self.settings),
            "notes": list(self.notes),
            "residuals": [dict(r) for r in self.residuals],
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
                gaps.append((len(batch), ctx, (b - a) * per_gap))
            if gaps:  # one observation a request: the mean of its decode-only gaps
                n = len(gaps)
                ctx_mean = sum(g[1] for g in gaps) / n
                out.append(
                    Observation(
                        "decode",
                        sum(g[0] for g in gaps) / n,
                        ctx_mean * kv_bytes_per_token,
                        sum(g[2] for g in gaps) / n,
                        r.request_id,
                        run,
                        attn_pairs=ctx_mean,  # one new token a sequence: pairs = context
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
                    attn_pairs=float(uncached * r.prompt_tokens),
                )
            )
    return out


def _lstsq_nonneg(a: Any, b: Any) -> Any:
    """Least squares of ``a x = b`` with ``x >= 0`` (a negative coefficient is dropped
    and the rest refitted)."""
    import numpy as np

    keep = list(range(a.shape[1]))
    coef = np.zeros(a.shape[1])
    while keep:
        # scale columns so bytes and counts are comparable
        cols = a[:, keep]
        big = np.abs(cols).max(axis=0)
        scale = np.where(big > 0, big, 1.0)
        sol, *_ = np.linalg.lstsq(cols / scale, b, rcond=None)
        sol = sol / scale
        if (sol >= 0).all():
            coef[keep] = sol
            return coef
        keep.pop(int(np.argmin(sol)))
    return coef


def _robust_fit(rows: Any, y: Any, iterations: int = 50) -> Any:
    """Non-negative coefficients minimising Huber's loss of the relative residuals
    ``(rows @ x - y) / y`` (iteratively reweighted least squares; the scale is the
    residuals' median absolute deviation, so exact data stays exact)."""
    import numpy as np

    rel_rows, rel_y = rows / y[:, None], np.ones_like(y)
    w = np.ones_like(y)
    coef = _lstsq_nonneg(rel_rows, rel_y)
    for _ in range(iterations):
        r = rel_rows @ coef - rel_y
        mad = float(np.median(np.abs(r - np.median(r)))) * 1.4826
        if mad <= 1e-12:
            break
        cut = HUBER_K * mad
        w_new = np.minimum(1.0, cut / np.maximum(np.abs(r), 1e-300))
        if np.allclose(w_new, w, rtol=1e-9, atol=1e-12):
            break
        w = w_new
        sw = np.sqrt(w)
        coef = _lstsq_nonneg(rel_rows * sw[:, None], rel_y * sw)
    # then the observations far outside the Huber fit's spread are left out and the
    # rest refitted (Huber's weights bound an outlier's pull but do not remove it)
    # (never more than TRIM_MAX of any one kind: with few observations of a kind, a
    # wide spread is the machine's, not a few outliers)
    r = rel_rows @ coef - rel_y
    mad = float(np.median(np.abs(r - np.median(r)))) * 1.4826
    keep = np.abs(r) <= TRIM_K * mad
    for kind in np.unique(rows[:, 3]):
        mine = rows[:, 3] == kind
        if (~keep[mine]).sum() > TRIM_MAX * mine.sum():
            keep[mine] = True
    if mad > 1e-12 and keep.sum() >= rows.shape[1] and not keep.all():
        coef = _lstsq_nonneg(rel_rows[keep], rel_y[keep])
    return coef


def _unidentified(rows: Any) -> list[int]:
    """Columns (of those that vary at all) that the other columns explain: their
    coefficient cannot be told apart from the others'."""
    import numpy as np

    out = []
    norms = np.linalg.norm(rows, axis=0)
    for j in range(rows.shape[1]):
        if norms[j] == 0:
            out.append(j)
            continue
        others = np.delete(rows, j, axis=1)
        col = rows[:, j] / norms[j]
        o_norm = np.where(np.linalg.norm(others, axis=0) > 0, np.linalg.norm(others, axis=0), 1.0)
        sol, *_ = np.linalg.lstsq(others / o_norm, col, rcond=None)
        if np.linalg.norm(others / o_norm @ sol - col) < 1e-3:
            out.append(j)
    return out


_WHY = {
    "overhead_s": "the fixed step overhead",
    "per_token_s": "the per-token cost (vary prompt lengths and batch sizes)",
    "per_kv_byte_s": "the per-KV-byte cost (vary the context at a fixed batch size)",
    "request_overhead_s": "the request overhead (needs requests that ran alone)",
    "per_attn_pair_s": "the attention cost (vary prompt lengths of lone requests)",
    "per_seq_s": "the per-sequence cost (needs decodes of several batch sizes and prefills)",
}


def residuals(cal: Calibration, obs: Sequence[Observation]) -> list[dict[str, Any]]:
    """The fit's residuals per kind and size: prefill observations by uncached prompt
    tokens, decode ones by batch size, in up to five buckets each (equal counts);
    per bucket the count, size range, median measured seconds and median residual
    (predicted - measured) in seconds and relative to the measurement. A model that
    fits leaves no trend across a kind's buckets."""
    import numpy as np

    out: list[dict[str, Any]] = []
    for kind in ("prefill", "decode"):
        mine = sorted((o for o in obs if o.kind == kind), key=lambda o: o.tokens)
        if not mine:
            continue
        for part in np.array_split(np.arange(len(mine)), min(5, len(mine))):
            sel = [mine[i] for i in part]
            res = [cal.predict_obs(o) - o.seconds for o in sel]
            rel = [e / o.seconds for e, o in zip(res, sel, strict=True) if o.seconds > 0]
            out.append(
                {
                    "kind": kind,
                    "size": "uncached prompt tokens" if kind == "prefill" else "batch size",
                    "lo": float(sel[0].tokens),
                    "hi": float(sel[-1].tokens),
                    "n": len(sel),
                    "measured_s": float(np.median([o.seconds for o in sel])),
                    "residual_s": float(np.median(res)),
                    "relative": float(np.median(rel)) if rel else 0.0,
                }
            )
    return out


def fit(
    obs: Sequence[Observation],
    kv_bytes_per_token: float,
    *,
    runs: Sequence[str] = (),
    settings: dict[str, Any] | None = None,
) -> Calibration:
    """Robust coefficients for ``obs`` (module docstring); ConfigError when there are
    too few."""
    import numpy as np

    usable = [o for o in obs if o.seconds > 0]
    # one observation per coefficient; with fewer, the per-sequence term and then the
    # attention term (the smallest on short prompts) are left out: 0, with a note
    least = len(COEFFICIENTS) - len(LAST_FITTED)
    if len(usable) < least:
        raise ConfigError(
            f"only {len(usable)} usable step observations (need >= {least}): "
            "replay more requests with streaming, some of them alone on the server"
        )
    left_out = LAST_FITTED[: max(0, len(COEFFICIENTS) - len(usable))]
    keep = [k not in left_out for k in COEFFICIENTS]
    rows = np.array(
        [
            [
                1.0,
                o.tokens,
                o.kv_bytes,
                float(o.kind == "prefill"),
                o.attn_pairs,
                o.num_seqs,
            ]
            for o in usable
        ],
        dtype=float,
    ) * np.array(keep, dtype=float)
    y = np.array([o.seconds for o in usable], dtype=float)
    coef = _robust_fit(rows, y)
    notes = [
        f"{COEFFICIENTS[j]}: cannot be told apart from the other terms in these "
        f"observations ({_WHY[COEFFICIENTS[j]]}); fitted as {float(coef[j]):.3g}"
        for j in _unidentified(rows / y[:, None])
        if COEFFICIENTS[j] not in left_out
        and (COEFFICIENTS[j] != "per_attn_pair_s" or rows[:, 4].any())
    ]
    notes += [
        f"{k}: not fitted ({len(usable)} observations, one per coefficient needed to fit it too); 0"
        for k in left_out
    ]
    cal = Calibration(
        {k: float(v) for k, v in zip(COEFFICIENTS, coef, strict=True)},
        kv_bytes_per_token,
        {},
        {},
        list(runs),
        dict(settings or {}),
        notes,
    )
    for kind in ("decode", "prefill"):
        mine = [o for o in usable if o.kind == kind]
        if not mine:
            continue
        res = [cal.predict_obs(o) - o.seconds for o in mine]
        ape = sorted(abs(e) / o.seconds for e, o in zip(res, mine, strict=True))
        cal.fit_error[kind] = {
            "mape": sum(ape) / len(ape),
            # the typical step's error, unmoved by the few a busy machine slowed
            "median_ape": float(np.median(ape)),
            "rms_s": math.sqrt(sum(e * e for e in res) / len(res)),
            "bias_s": sum(res) / len(res),
        }
        cal.num_observations[kind] = len(mine)
    cal.residuals.extend(residuals(cal, usable))
    return cal


#: engine settings a step cost depends on, as a calibration's ``settings`` name them
MATCHED_SETTINGS = ("block_size", "max_num_batched_tokens", "max_num_seqs")


def setting_mismatches(cal: Calibration, run: dict[str, int]) -> list[str]:
    """One line for each of :data:`MATCHED_SETTINGS` that the calibration recorded with
    a value other than ``run``'s (a step's cost depends on them: a calibration is only
    as good as the settings it was measured with)."""
    out = []
    for key in MATCHED_SETTINGS:
        fitted, mine = cal.settings.get(key), run.get(key)
        try:
            fitted_n = int(fitted)  # type: ignore[arg-type]  # (metric labels are strings)
        except (TypeError, ValueError):
            continue
        if mine is not None and fitted_n != mine:
            out.append(
                f"the calibration was measured with {key} {fitted_n:,}, this run uses "
                f"{mine:,}: its step costs may not hold (calibrate with the same settings, "
                f"or --set {key}={fitted_n})"
            )
    return out


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
        [str(n) for n in d.get("notes") or []],
        [dict(r) for r in d.get("residuals") or [] if isinstance(r, dict)],
    )


__all__ = [
    "COEFFICIENTS",
    "Calibration",
    "Observation",
    "fit",
    "load_calibration",
    "observations",
    "residuals",
    "setting_mismatches",
]
