"""Summaries of request records: latency distributions, token counts, prefix-cache figures.

:func:`summarize` is the request-level summary every backend shares (vLLM's
metric names); :func:`group_summaries` is the same per request class or
session.

Percentiles: :func:`dist` gives numpy's numbers, computed in pure Python for
finite samples without zeros, because numpy is not otherwise imported by a
plain ``kvlab simulate`` of a workload file. Measured on a shared 2-core
machine: ``python -X importtime -c "import numpy"`` takes 0.11-0.17 s
(cumulative, 5 runs), while ``kvlab simulate`` of a 40-request workload file
takes 0.12 s end to end, and 0.22-0.29 s with numpy imported first; numpy
would double the command. On large samples numpy is faster (20,000 values:
0.8 ms against 3.2 ms, 200,000: 9 ms against 40 ms), a few milliseconds per
run, and the traces that produce such samples import numpy anyway (their
importers use it), so the pure-Python path costs little where it is slower.
``tests/test_results_encoding.py`` checks it against numpy bit for bit.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from operator import attrgetter, sub
from typing import Any

from kvlab.results.records import (
    STATUS_FAILED,
    STATUS_OK,
    STATUS_REJECTED,
    STATUS_UNFINISHED,
    RequestRecord,
)

_ARRIVAL = attrgetter("arrival_s")
_FIRST = attrgetter("first_token_s")
_FINISH = attrgetter("finish_s")
_OUTPUT = attrgetter("output_tokens")
_PROMPT = attrgetter("prompt_tokens")
_STATUS = attrgetter("status")
_CACHED = attrgetter("cached_tokens")
_OFFLOAD_HIT = attrgetter("offload_hit_tokens")
_PREEMPTIONS = attrgetter("num_preemptions")


def dist(values: Iterable[float]) -> dict[str, float | None]:
    """mean / p50 / p90 / p99 / max of ``values`` (None when empty).

    The numbers are numpy's (``mean``, ``percentile`` with linear
    interpolation, ``max``) to the last bit. Finite samples without zeros are
    computed in pure Python by the same arithmetic (:func:`_pairwise_sum` and
    :func:`_linear_percentile`), which spares importing numpy; any other sample
    goes through numpy itself.
    """
    a = [float(v) for v in values if v is not None]
    if not a:
        return {"mean": None, "p50": None, "p90": None, "p99": None, "max": None}
    total = _pairwise_sum(a, 0, len(a))
    # A finite total means every value is finite (inf and nan never cancel out).
    # Zeros are excluded because the sign of a zero picked by numpy's partition
    # and max is an implementation detail.
    if not math.isfinite(total) or 0.0 in a:
        return _dist_numpy(a)
    a.sort()
    return {
        "mean": total / len(a),
        "p50": _linear_percentile(a, 0.5),
        "p90": _linear_percentile(a, 0.9),
        "p99": _linear_percentile(a, 0.99),
        "max": a[-1],
    }


def _dist_numpy(values: list[float]) -> dict[str, float | None]:
    import numpy as np

    a = np.array(values, dtype=float)
    p50, p90, p99 = np.percentile(a, [50, 90, 99])
    return {
        "mean": float(a.mean()),
        "p50": float(p50),
        "p90": float(p90),
        "p99": float(p99),
        "max": float(a.max()),
    }


def _pairwise_sum(a: list[float], lo: int, n: int) -> float:
    """``a[lo:lo + n]`` summed in the order of numpy's float64 ``add.reduce``.

    numpy (loops_utils.h, ``pairwise_sum``): under 8 values a plain loop; up to
    128 eight interleaved partial sums combined as ((0+1)+(2+3))+((4+5)+(6+7)),
    then the remainder; above that, the two halves (the first a multiple of 8
    long) summed recursively.
    """
    if n < 8:
        res = 0.0
        for i in range(lo, lo + n):
            res += a[i]
        return res
    if n <= 128:
        r0, r1, r2, r3, r4, r5, r6, r7 = a[lo : lo + 8]
        end = lo + n - n % 8
        for j in range(lo + 8, end, 8):
            r0 += a[j]
            r1 += a[j + 1]
            r2 += a[j + 2]
            r3 += a[j + 3]
            r4 += a[j + 4]
            r5 += a[j + 5]
            r6 += a[j + 6]
            r7 += a[j + 7]
        res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
        for i in range(end, lo + n):
            res += a[i]
        return res
    n2 = n // 2
    n2 -= n2 % 8
    return _pairwise_sum(a, lo, n2) + _pairwise_sum(a, lo + n2, n - n2)


def _linear_percentile(ordered: list[float], q: float) -> float:
    """numpy's ``percentile(..., method="linear")`` of sorted finite values, ``q`` in [0, 1].

    The virtual index is (n - 1) q; at or beyond the last index both neighbours
    are the last value and the weight is taken from index -1, as numpy does;
    the interpolation is numpy's ``_lerp`` (from the nearer end when the weight
    is >= 0.5).
    """
    n = len(ordered)
    virtual = (n - 1) * q
    if virtual >= n - 1:
        lo = hi = -1
    else:
        lo = math.floor(virtual)
        hi = lo + 1
    t = virtual - lo
    a, b = ordered[lo], ordered[hi]
    diff = b - a
    if t >= 0.5:
        return b - diff * (1 - t)
    return a + diff * t


#: Samples at least this long are summed and sorted by numpy: the same numbers as
#: the pure-Python arithmetic (tests check both paths against numpy bit for bit),
#: measured faster from here on (see the module docstring).
NUMPY_FROM = 20_000


class Sample:
    """One latency metric's values (record order), for :meth:`dist`, :meth:`std` and
    :meth:`percentile`, sorted at most once however many figures are asked of it.

    Invariant: ``values`` are floats without None; the figures equal those of
    :func:`dist`, :func:`std` and :func:`percentile` on the same values, to the
    last bit. A sample of :data:`NUMPY_FROM` values or more is held as a numpy
    array (a run that long imported numpy to load its trace anyway).
    """

    __slots__ = ("_n", "_ordered", "_total", "_values")

    def __init__(self, values: Sequence[float]) -> None:
        self._n = len(values)
        self._values: Any = values
        if self._n >= NUMPY_FROM:
            import numpy as np

            self._values = np.asarray(values, dtype=float)
        self._ordered: Any = None
        self._total: float | None = None

    def __len__(self) -> int:
        return self._n

    def _sum(self) -> float:
        """The values summed in numpy's order (``add.reduce``)."""
        if self._total is None:
            v = self._values
            self._total = _pairwise_sum(v, 0, self._n) if isinstance(v, list) else float(v.sum())
        return self._total

    def _is_plain(self) -> bool:
        """Finite and without zeros: the samples :func:`dist` computes without numpy."""
        v = self._values
        return math.isfinite(self._sum()) and not (
            0.0 in v if isinstance(v, list) else bool((v == 0.0).any())
        )

    def ordered(self) -> Any:
        """The values sorted (once)."""
        if self._ordered is None:
            v = self._values
            self._ordered = sorted(v) if isinstance(v, list) else _np_sorted(v)
        return self._ordered

    def dist(self) -> dict[str, float | None]:
        """:func:`dist` of the values."""
        if not self._n:
            return dist(())
        if not self._is_plain():
            return _dist_numpy(list(self._values))
        a = self.ordered()
        return {
            "mean": self._sum() / self._n,
            "p50": float(_linear_percentile(a, 0.5)),
            "p90": float(_linear_percentile(a, 0.9)),
            "p99": float(_linear_percentile(a, 0.99)),
            "max": float(a[-1]),
        }

    def std(self) -> float | None:
        """:func:`std` of the values (the squares by numpy for a large sample: each one
        product, rounded once, as in :func:`std`)."""
        v = self._values
        if not self._n:
            return None
        if isinstance(v, list) or not math.isfinite(self._sum()):
            return std(v if isinstance(v, list) else v.tolist())
        try:
            mean = math.fsum(v.tolist()) / self._n
            d = v - mean
            return math.sqrt(math.fsum((d * d).tolist()) / self._n)
        except OverflowError:
            return std(v.tolist())

    def percentile(self, q: float) -> float | None:
        """:func:`percentile` of the values, ``q`` in [0, 100]."""
        if not self._n:
            return None
        if not self._is_plain():
            return percentile(list(self._values), q)
        return float(_linear_percentile(self.ordered(), q / 100.0))

    def scaled(self, k: float) -> Sample:
        """The sample of ``k * v`` for every value (``k`` > 0: the order is kept, so a
        finite sorted copy is scaled rather than sorted again)."""
        v = self._values
        out = Sample([k * x for x in v] if isinstance(v, list) else v * k)
        if self._ordered is not None and math.isfinite(self._sum()):
            o = self._ordered
            out._ordered = [k * x for x in o] if isinstance(o, list) else o * k
        return out


def _np_sorted(a: Any) -> Any:
    import numpy as np

    return np.sort(a, kind="stable")


def summarize(
    records: Sequence[RequestRecord],
    *,
    duration_s: float | None = None,
    counters: Mapping[str, Any] | None = None,
    samples: Mapping[str, Sample | None] | None = None,
) -> dict[str, Any]:
    """Request-level summary shared by every backend (``samples``:
    :func:`latency_samples` of ``records``, when already computed).

    ``duration_s`` defaults to last finish - first arrival. ``counters`` are
    backend counters (prefix cache queries/hits, preemptions, evictions, usage,
    offload...) merged in as given; when absent, prefix-cache keys are derived
    from the records that queried the cache (:func:`prefix_queried`): queries =
    their prompt tokens, hits = GPU-tier cached tokens,
    ``external_prefix_cache_hits`` = lower-tier ones, ``num_preemptions`` =
    the records' preemptions. A figure is None (unknown) when a record it sums
    does not know its count (``None``, see :class:`RequestRecord`); hits then
    count every cached token when the tiers are unknown.
    """
    done = [r for r in records if r.status == STATUS_OK and r.finish_s is not None]
    if duration_s is None:
        starts = list(map(_ARRIVAL, records))
        ends = [e for e in map(_FINISH, done) if e is not None]
        duration_s = (max(ends) - min(starts)) if ends and starts else 0.0
    out_tokens = sum(map(_OUTPUT, done))
    prompt_tokens = sum(map(_PROMPT, done))
    statuses = list(map(_STATUS, records))
    lat = latency_samples(records) if samples is None else samples
    s: dict[str, Any] = {
        "num_requests": len(records),
        "num_completed": len(done),
        "num_rejected": statuses.count(STATUS_REJECTED),
        "num_failed": statuses.count(STATUS_FAILED),
        "num_unfinished": statuses.count(STATUS_UNFINISHED),
        "prompt_tokens": prompt_tokens,
        "output_tokens": out_tokens,
        "ttft_s": _dist_of(lat["ttft_s"]),
        "tpot_s": _dist_of(lat["tpot_s"]),
        "e2e_s": _dist_of(lat["e2e_s"]),
        "request_throughput_per_s": (len(done) / duration_s) if duration_s > 0 else None,
        "output_throughput_tok_per_s": (out_tokens / duration_s) if duration_s > 0 else None,
        "total_throughput_tok_per_s": (
            (out_tokens + prompt_tokens) / duration_s if duration_s > 0 else None
        ),
        "simulated_duration_s": duration_s,
    }
    # vLLM's split: prefix_cache_* counts the GPU tier, external_prefix_cache_* lower tiers.
    queried = prefix_queried(records)
    cached = list(map(_CACHED, queried))
    offloaded = list(map(_OFFLOAD_HIT, queried))
    preemptions = list(map(_PREEMPTIONS, records))
    if None in cached:
        s["prefix_cache_queries"] = s["prefix_cache_hits"] = None
    else:
        s["prefix_cache_queries"] = sum(map(_PROMPT, queried))
        tiers = [0 if o is None else o for o in offloaded] if None in offloaded else offloaded
        s["prefix_cache_hits"] = sum(map(sub, cached, tiers))
    s["external_prefix_cache_hits"] = None if None in offloaded else sum(offloaded)
    s["num_preemptions"] = None if None in preemptions else sum(preemptions)
    return with_counters(s, counters)


def _dist_of(sample: Sample | None) -> dict[str, float | None]:
    return dist(()) if sample is None else sample.dist()


def prefix_queried(records: Sequence[RequestRecord]) -> list[RequestRecord]:
    """The records whose prompts queried the prefix cache: those admitted
    (``admitted_s`` set) and those that completed (a live server admits every
    request it answers, without telling when)."""
    return [r for r in records if r.admitted_s is not None or r.status == STATUS_OK]


def with_counters(summary: dict[str, Any], counters: Mapping[str, Any] | None) -> dict[str, Any]:
    """``summary`` with backend ``counters`` merged in (as :func:`summarize` does), its
    prefix-cache hit rate recomputed; the input's own keys are not changed.

    The hit rate is hits / queries; 0.0 when there were no queries; None when
    either figure is unknown (None), never 0.0 then.
    """
    s = dict(summary)
    s.pop("prefix_cache_hit_rate", None)  # recomputed last, as summarize orders it
    if counters:
        s.update(counters)
    qq, hh = s.get("prefix_cache_queries"), s.get("prefix_cache_hits")
    s["prefix_cache_hit_rate"] = None if qq is None or hh is None else (hh / qq) if qq else 0.0
    return s


def count_errors(records: Sequence[RequestRecord]) -> dict[str, int]:
    """Failed or unfinished records per ``error`` kind (:mod:`kvlab.backends.failures`),
    sorted by kind. Rejected records are left out: ``num_rejected`` counts them, and
    their ``error`` says why in words."""
    out: dict[str, int] = {}
    for r in records:
        if r.error and r.status != STATUS_REJECTED:
            out[r.error] = out.get(r.error, 0) + 1
    return dict(sorted(out.items()))


def group_summaries(
    records: Sequence[RequestRecord], key: str = "cls", *, duration_s: float | None = None
) -> dict[str, dict[str, Any]]:
    """:func:`summarize` per value of a record attribute (``cls`` or ``session_id``)."""
    groups = _groups(records, key)
    return {k: summarize(v, duration_s=duration_s) for k, v in sorted(groups.items())}


def _groups(records: Sequence[RequestRecord], key: str) -> dict[str, list[RequestRecord]]:
    values = dict.fromkeys(map(attrgetter(key), records))
    if len(values) == 1:  # one group (most runs): no list built record by record
        return {str(next(iter(values))): list(records)}
    groups: dict[str, list[RequestRecord]] = {}
    for r in records:
        groups.setdefault(str(getattr(r, key)), []).append(r)
    return groups


def summary_with_groups(
    records: Sequence[RequestRecord],
    *,
    duration_s: float | None,
    counters: Mapping[str, Any] | None = None,
    samples: Mapping[str, Sample | None] | None = None,
) -> dict[str, Any]:
    """``summarize(records, duration_s=..., counters=..., samples=...)`` plus ``by_class``:
    :func:`group_summaries` by ``cls`` (computed once when all records share one)."""
    groups = _groups(records, "cls")
    if len(groups) == 1:
        whole = summarize(records, duration_s=duration_s, samples=samples)
        s = with_counters(whole, counters)
        s["by_class"] = {k: whole for k in groups}
        return s
    s = summarize(records, duration_s=duration_s, counters=counters, samples=samples)
    s["by_class"] = group_summaries(records, duration_s=duration_s)
    return s


# --------------------------------------------------------------------------- latency extras

#: Percentiles reported by default (vLLM bench's ``--metric-percentiles`` default: 99;
#: the median is always reported, as vLLM bench does).
DEFAULT_PERCENTILES: tuple[float, ...] = (99.0,)

#: Goodput SLO names (vLLM bench's ``--goodput KEY:VALUE``, values in milliseconds).
SLO_METRICS: tuple[str, ...] = ("ttft", "tpot", "e2el")


def itl_values(records: Iterable[RequestRecord]) -> list[float] | None:
    """Inter-token latencies (seconds) of the completed records: the gaps between
    consecutive streamed chunks of each (REFERENCE: ITL = gaps between streamed
    chunks; a chunk can carry several tokens). None when no completed record has
    chunk times (a simulation, an in-process run): unknown, not empty."""
    gaps: list[float] = []
    known = False
    for r in records:
        if r.status != STATUS_OK or not r.chunk_times_s:
            continue
        known = True
        t = r.chunk_times_s
        gaps.extend(map(sub, t[1:], t[:-1]))
    return gaps if known else None


def std(values: Sequence[float]) -> float | None:
    """Population standard deviation (numpy's ``std``, ddof 0, as vLLM bench reports);
    None when empty."""
    if not values:
        return None
    try:  # exactly rounded sums
        mean = math.fsum(values) / len(values)
        return math.sqrt(math.fsum([(d := v - mean) * d for v in values]) / len(values))
    except (OverflowError, ValueError):  # an infinite or overflowing sample: numpy's answer
        import numpy as np

        with np.errstate(all="ignore"):
            return float(np.std(np.asarray(values, dtype=float)))


def percentile(values: Sequence[float], q: float) -> float | None:
    """numpy's linear-interpolation percentile of ``values``, ``q`` in [0, 100]; None
    when empty."""
    a = sorted(float(v) for v in values)
    if not a:
        return None
    return _linear_percentile(a, q / 100.0)


def percentile_label(q: float) -> str:
    """``p99``, ``p99.9``: vLLM bench's spelling of a percentile."""
    return f"p{q:g}"


def parse_percentiles(text: str) -> tuple[float, ...]:
    """``"50,90,99"`` -> (50.0, 90.0, 99.0); :class:`~kvlab.errors.ConfigError` naming
    the bad item (each must be a number in (0, 100])."""
    from kvlab.errors import ConfigError

    out: list[float] = []
    for item in text.split(","):
        try:
            q = float(item.strip())
        except ValueError:
            raise ConfigError(f"--percentiles: {item.strip()!r} is not a number") from None
        if not (0 < q <= 100):
            raise ConfigError(f"--percentiles: {item.strip()} is not in (0, 100]")
        out.append(q)
    return tuple(dict.fromkeys(out))


def parse_goodput(text: str | Sequence[str] | None) -> dict[str, float] | None:
    """``"ttft:200,tpot:50"`` (or the items as a list, as vLLM bench takes them) ->
    {"ttft": 200.0, "tpot": 50.0}, SLOs in milliseconds; None for no SLO.
    :class:`~kvlab.errors.ConfigError` naming the bad item."""
    from kvlab.errors import ConfigError

    if text is None:
        return None
    items = [text] if isinstance(text, str) else list(text)
    out: dict[str, float] = {}
    for part in (p.strip() for item in items for p in item.replace(" ", ",").split(",")):
        if not part:
            continue
        name, sep, value = part.partition(":")
        if not sep or name not in SLO_METRICS:
            raise ConfigError(
                f"--goodput: {part!r} is not NAME:MS with NAME one of {', '.join(SLO_METRICS)}"
            )
        try:
            ms = float(value)
        except ValueError:
            raise ConfigError(f"--goodput: {value!r} in {part!r} is not a number") from None
        if not (math.isfinite(ms) and ms > 0):
            raise ConfigError(f"--goodput: {part!r} must be a positive number of milliseconds")
        out[name] = ms
    if not out:
        raise ConfigError("--goodput: no SLO given, e.g. --goodput ttft:200,tpot:50")
    return out


def latency_samples(records: Sequence[RequestRecord]) -> dict[str, Sample | None]:
    """Per-request TTFT, TPOT, E2E and the ITL gaps (seconds) of the completed records,
    each a :class:`Sample` (ITL None when no record has chunk times). Computed once per
    run and handed to :func:`summarize`, :func:`latency_figures` and
    :func:`vllm_bench_metrics`, which compute it themselves when not given it."""
    done = [r for r in records if r.status == STATUS_OK and r.finish_s is not None]
    first = [r for r in done if r.first_token_s is not None]
    itl = itl_values(done)
    # the records' own ttft_s / tpot_s / e2e_s, inlined (the same float operations)
    return {
        "ttft_s": Sample([r.first_token_s - r.arrival_s for r in first]),  # type: ignore[operator]
        "tpot_s": Sample(
            [
                (r.finish_s - r.first_token_s) / (r.output_tokens - 1)  # type: ignore[operator]
                for r in first
                if r.output_tokens >= 2
            ]
        ),
        "itl_s": None if itl is None else Sample(itl),
        "e2e_s": Sample([r.finish_s - r.arrival_s for r in done]),  # type: ignore[operator]
    }


def good_requests(records: Sequence[RequestRecord], slo_ms: Mapping[str, float]) -> int:
    """Completed records that meet every SLO in ``slo_ms`` (vLLM bench's goodput:
    TTFT, TPOT and E2E latency each at most its SLO; a one-token request has no
    TPOT and meets a TPOT SLO)."""
    n = 0
    for r in records:
        if r.status != STATUS_OK or r.finish_s is None:
            continue
        got = {"ttft": r.ttft_s, "tpot": r.tpot_s or 0.0, "e2el": r.e2e_s}
        if all(_meets(got[k], v) for k, v in slo_ms.items()):
            n += 1
    return n


def _meets(value_s: float | None, slo_ms: float) -> bool:
    return value_s is not None and 1e3 * value_s <= slo_ms


def latency_figures(
    records: Sequence[RequestRecord],
    *,
    duration_s: float | None,
    percentiles: Sequence[float] = DEFAULT_PERCENTILES,
    goodput_slo_ms: Mapping[str, float] | None = None,
    samples: Mapping[str, Sample | None] | None = None,
) -> dict[str, Any]:
    """What users of vLLM bench, GuideLLM and AIPerf expect beside :func:`summarize`
    (``samples``: :func:`latency_samples` of ``records``, when already computed):

    * ``itl_s``: :func:`dist` of the inter-token latencies (:func:`itl_values`;
      None values when no record has chunk times);
    * ``latency_std_s``: the population standard deviation of TTFT, TPOT, ITL, E2E;
    * ``latency_percentiles_s``: each of them at ``percentiles`` (``p99``...);
    * ``goodput``: with SLOs, the completed requests meeting all of them and their
      rate over ``duration_s`` (vLLM's ``request_goodput``); None without SLOs;
    * ``miss_causes``: records that queried the prefix cache, by ``miss_cause``
      (see ``MISS_CAUSES``); None when no record knows its cause (a live server).
    """
    from kvlab.results.records import MISS_CAUSES

    lat = latency_samples(records) if samples is None else samples
    itl = lat["itl_s"]
    out: dict[str, Any] = {
        "itl_s": dist(()) if itl is None else itl.dist(),
        "latency_std_s": {k: (None if v is None else v.std()) for k, v in lat.items()},
        "latency_percentiles_s": {
            k: {percentile_label(q): (None if v is None else v.percentile(q)) for q in percentiles}
            for k, v in lat.items()
        },
    }
    if goodput_slo_ms:
        good = good_requests(records, goodput_slo_ms)
        done = sum(1 for r in records if r.status == STATUS_OK and r.finish_s is not None)
        out["goodput"] = {
            "slo_ms": dict(goodput_slo_ms),
            "good_requests": good,
            "good_fraction": good / done if done else None,
            "request_goodput_per_s": good / duration_s if duration_s else None,
        }
    else:
        out["goodput"] = None
    causes = [r.miss_cause for r in prefix_queried(records) if r.miss_cause is not None]
    out["miss_causes"] = {c: causes.count(c) for c in MISS_CAUSES} if causes else None
    return out


def vllm_bench_metrics(
    summary: Mapping[str, Any],
    records: Sequence[RequestRecord],
    *,
    percentiles: Sequence[float] = DEFAULT_PERCENTILES,
    goodput_slo_ms: Mapping[str, float] | None = None,
    samples: Mapping[str, Sample | None] | None = None,
) -> dict[str, Any]:
    """The run in vLLM bench's result keys and units (milliseconds, ``mean_ttft_ms``,
    ``median_ttft_ms``, ``std_ttft_ms``, ``p99_ttft_ms``, the same for ``tpot``,
    ``itl`` and ``e2el``; ``duration`` in seconds, ``completed``,
    ``total_input_tokens``, ``total_output_tokens``, ``request_throughput``,
    ``output_throughput``, ``total_token_throughput``, ``request_goodput`` with
    SLOs). A figure kvlab does not know is null (ITL without chunk times).
    ``samples``: :func:`latency_samples` of ``records``, when already computed."""
    lat = latency_samples(records) if samples is None else samples
    duration = summary.get("simulated_duration_s")
    out: dict[str, Any] = {
        "duration": duration,
        "completed": summary.get("num_completed"),
        "failed": (summary.get("num_failed") or 0) + (summary.get("num_unfinished") or 0),
        "total_input_tokens": summary.get("prompt_tokens"),
        "total_output_tokens": summary.get("output_tokens"),
        "request_throughput": summary.get("request_throughput_per_s"),
        "output_throughput": summary.get("output_throughput_tok_per_s"),
        "total_token_throughput": summary.get("total_throughput_tok_per_s"),
    }
    if goodput_slo_ms:
        good = good_requests(records, goodput_slo_ms)
        out["request_goodput"] = good / duration if duration else None
    for name, key in (("ttft", "ttft_s"), ("tpot", "tpot_s"), ("itl", "itl_s"), ("e2el", "e2e_s")):
        v = lat[key]
        ms = None if v is None else v.scaled(1e3)
        d = dist(()) if ms is None else ms.dist()
        out[f"mean_{name}_ms"] = d["mean"]
        out[f"median_{name}_ms"] = d["p50"]
        out[f"std_{name}_ms"] = None if ms is None else ms.std()
        for q in percentiles:
            out[f"{percentile_label(q)}_{name}_ms"] = None if ms is None else ms.percentile(q)
    return out


__all__ = [
    "DEFAULT_PERCENTILES",
    "SLO_METRICS",
    "Sample",
    "count_errors",
    "dist",
    "good_requests",
    "group_summaries",
    "itl_values",
    "latency_figures",
    "latency_samples",
    "parse_goodput",
    "parse_percentiles",
    "percentile",
    "percentile_label",
    "prefix_queried",
    "std",
    "summarize",
    "summary_with_groups",
    "vllm_bench_metrics",
    "with_counters",
]
