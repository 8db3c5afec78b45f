"""One watched server: scrape ``/metrics``, turn two scrapes into one :class:`Sample`.

A sample holds the gauges as scraped and, over the interval since the previous
successful scrape, the counter increases turned into rates (prefix hit rate as
hits / queries of that interval, not lifetime), and TTFT / inter-token latency
quantiles from the increase of the histogram buckets. Names are read through
the server profiles of :mod:`kvlab.backends.metrics` (vLLM under both metric-name
generations, SGLang, llama.cpp), detected on every scrape.

Invariants of :class:`ServerWatch`: a counter that went down between two scrapes
means the server restarted; its increase over that interval is its new value
(counted from zero, as Prometheus' ``increase``) and the sample says
``counter_reset``, so no rate is ever negative. While scrapes fail,
``unreachable_since`` is the wall time of the first failure; the next good
scrape clears it and rates resume against the last good scrape.
"""

from __future__ import annotations

import math
import time
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

from kvlab.backends.metrics import (
    PROFILES,
    Samples,
    ServerProfile,
    cache_config_info,
    detect_profile,
    parse_prometheus,
)
from kvlab.monitor import histogram as hist

#: Problems a scrape can have (``Sample.problem``).
UNREACHABLE = "unreachable"
HTTP_ERROR = "http_error"
NOT_METRICS = "not_metrics"
OTHER_DIALECT = "other_dialect"


def metrics_url(url: str) -> str:
    """``url`` with ``http://`` when it has no scheme and ``/metrics`` when it has no path."""
    if "://" not in url:
        url = "http://" + url
    scheme, _, rest = url.partition("://")
    host, slash, path = rest.partition("/")
    if not slash or not path:
        return f"{scheme}://{host}/metrics"
    return url


@dataclass(frozen=True)
class Scrape:
    """What one GET of ``/metrics`` returned: the body, or why there is none."""

    text: str | None
    problem: str | None = None
    error: str | None = None


def fetch(url: str, timeout_s: float) -> Scrape:
    """GET ``url``; never raises (a failure is a :class:`Scrape` with a problem)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:
            body = resp.read(32 * 1024 * 1024)
            return Scrape(body.decode("utf-8", "replace"))
    except urllib.error.HTTPError as e:
        return Scrape(None, HTTP_ERROR, f"HTTP {e.code} {e.reason} from {url}")
    except (urllib.error.URLError, OSError, ValueError) as e:
        reason = getattr(e, "reason", e)
        return Scrape(None, UNREACHABLE, f"cannot reach {url}: {reason}")


@dataclass
class Sample:
    """One server at one instant; rates and quantiles cover ``interval_s`` before it.

    Fractions are 0-1 (``kv_cache_usage_perc`` as vLLM exposes it); ``None`` means
    not known (no previous scrape, no traffic in the interval, or the server does
    not expose it).
    """

    url: str
    t_unix: float
    up: bool
    problem: str | None = None
    error: str | None = None
    unreachable_since_unix: float | None = None
    server: str | None = None
    dialect: str | None = None
    interval_s: float | None = None
    counter_reset: bool = False
    kv_cache_usage_perc: float | None = None
    num_requests_running: float | None = None
    num_requests_waiting: float | None = None
    prefix_hit_rate: float | None = None
    prefix_queries_tokens: float | None = None
    preemptions: float | None = None
    preemptions_per_s: float | None = None
    generation_tokens_per_s: float | None = None
    ttft_p50_s: float | None = None
    ttft_p99_s: float | None = None
    itl_p50_s: float | None = None
    itl_p99_s: float | None = None
    #: the histogram the ``itl_*`` quantiles come from (per-request TPOT when the
    #: server has no per-token one, as the simulator's endpoint)
    itl_metric: str | None = None
    totals: dict[str, float] = field(default_factory=dict)
    cache_config: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _dialect(profile: ServerProfile, samples: Samples) -> str:
    if profile.name == "vllm":
        return "vllm" if "vllm:kv_cache_usage_perc" in samples else "vllm-legacy"
    return profile.name


def _prefixes(samples: Samples) -> str:
    """The most common metric-name prefixes (``go_``, ``node_``...) of a scrape."""
    heads: Counter[str] = Counter()
    for name in samples:
        cut = min((i for i in (name.find(":"), name.find("_")) if i > 0), default=len(name))
        heads[name[: cut + 1]] += 1
    return ", ".join(f"{p}*" for p, _ in heads.most_common(4))


def _cache_config(
    samples: Samples, profile: ServerProfile, gauges: dict[str, float]
) -> dict[str, str]:
    info = cache_config_info(samples, profile)
    out: dict[str, str] = {
        k: info[k] for k in ("block_size", "num_gpu_blocks", "cache_dtype") if k in info
    }
    for k in ("max_total_num_tokens", "n_tokens_max"):
        if k in gauges:
            out[k] = str(int(gauges[k]))
    return out


class ServerWatch:
    """The watch on one server's ``/metrics`` (see the module for the invariants)."""

    def __init__(self, url: str, *, timeout_s: float = 2.0) -> None:
        self.url = metrics_url(url)
        self.timeout_s = timeout_s
        self._prev_t: float | None = None
        self._prev_counters: dict[str, float] = {}
        self._prev_hist: dict[str, hist.Buckets] = {}
        self.unreachable_since: float | None = None

    def scrape(self, now_unix: float | None = None) -> Sample:
        """GET ``/metrics`` and fold it in (see :meth:`update`)."""
        got = fetch(self.url, self.timeout_s)
        return self.update(got, time.time() if now_unix is None else now_unix)

    def _down(self, now: float, problem: str, error: str) -> Sample:
        if self.unreachable_since is None:
            self.unreachable_since = now
        return Sample(
            self.url, now, False, problem, error, unreachable_since_unix=self.unreachable_since
        )

    def update(self, got: Scrape, now: float) -> Sample:
        """The sample for scrape ``got`` taken at ``now`` (wall seconds)."""
        if got.text is None:
            return self._down(now, got.problem or UNREACHABLE, got.error or "no answer")
        samples = parse_prometheus(got.text)
        if not samples:
            head = got.text.lstrip()[:40].replace("\n", " ")
            return self._down(
                now,
                NOT_METRICS,
                f"{self.url} is not a Prometheus metrics endpoint (the answer starts {head!r})",
            )
        profile = detect_profile(samples)
        if profile is None:
            return self._down(
                now,
                OTHER_DIALECT,
                f"{self.url} speaks another dialect (metrics {_prefixes(samples)}); "
                f"kvlab reads {', '.join(p.prefix + '*' for p in PROFILES.values())}",
            )
        self.unreachable_since = None
        return self._sample(now, samples, profile)

    def _sample(self, now: float, samples: Samples, profile: ServerProfile) -> Sample:
        gauges = profile.read(samples, "gauges")
        counters = profile.read(samples, "counters")
        s = Sample(self.url, now, True, server=profile.name, dialect=_dialect(profile, samples))
        s.kv_cache_usage_perc = gauges.get("kv_cache_usage_perc")
        s.num_requests_running = gauges.get("num_requests_running")
        s.num_requests_waiting = gauges.get("num_requests_waiting")
        s.cache_config = _cache_config(samples, profile, gauges)
        s.totals = {
            k: counters[k]
            for k in ("prefix_cache_queries", "prefix_cache_hits", "num_preemptions")
            if k in counters
        }
        hists = {
            kind: got
            for kind, names in hist.HISTOGRAMS.get(profile.name, {}).items()
            if (got := hist.first_present(samples, names)) is not None
        }
        if "itl" in hists:
            s.itl_metric = hists["itl"][0]
        prev_t = self._prev_t
        if prev_t is not None and now > prev_t:
            s.interval_s = dt = now - prev_t
            d = self._deltas(counters, s)
            self._rates(s, d, dt, gauges)
            for kind, (name, b) in hists.items():
                inc, reset = hist.delta(self._prev_hist.get(name), b)
                s.counter_reset |= reset
                setattr(s, f"{kind}_p50_s", hist.quantile(0.5, inc))
                setattr(s, f"{kind}_p99_s", hist.quantile(0.99, inc))
        self._prev_t = now
        self._prev_counters = counters
        self._prev_hist = {name: b for name, b in hists.values()}
        return s

    def _deltas(self, counters: dict[str, float], s: Sample) -> dict[str, float]:
        d: dict[str, float] = {}
        for k, v in counters.items():
            if k not in self._prev_counters:
                continue
            inc = v - self._prev_counters[k]
            if inc < 0:  # the server restarted: the counter counts again from zero
                s.counter_reset = True
                inc = v
            d[k] = inc
        return d

    @staticmethod
    def _rates(s: Sample, d: dict[str, float], dt: float, gauges: dict[str, float]) -> None:
        if "num_preemptions" in d:
            s.preemptions = d["num_preemptions"]
            s.preemptions_per_s = d["num_preemptions"] / dt
        if "generation_tokens" in d:
            s.generation_tokens_per_s = d["generation_tokens"] / dt
        q, h = d.get("prefix_cache_queries"), d.get("prefix_cache_hits")
        if q is not None and h is not None:
            s.prefix_queries_tokens = q
            s.prefix_hit_rate = h / q if q > 0 else None
        elif d.get("prompt_tokens") and "prompt_tokens_cached" in d:
            s.prefix_queries_tokens = d["prompt_tokens"]
            s.prefix_hit_rate = d["prompt_tokens_cached"] / d["prompt_tokens"]
        elif "cache_hit_rate" in gauges and not math.isnan(gauges["cache_hit_rate"]):
            s.prefix_hit_rate = gauges["cache_hit_rate"]  # SGLang's own gauge


__all__ = [
    "HTTP_ERROR",
    "NOT_METRICS",
    "OTHER_DIALECT",
    "UNREACHABLE",
    "Sample",
    "Scrape",
    "ServerWatch",
    "fetch",
    "metrics_url",
]
