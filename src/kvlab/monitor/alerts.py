"""Alert rules on monitor samples: load them from YAML, evaluate them sample by
sample (pending -> firing -> resolved, like Prometheus' ``for``), and write the
same rules as Prometheus alerting rules over vLLM's metric names.

A rules file::

    rules:
      - name: KvCacheNearlyFull
        metric: kv_cache_usage_perc   # a fraction, 0-1
        op: ">"
        threshold: 0.9
        for_s: 60

Fields: ``name``, ``metric`` (one of :data:`METRICS`), ``op`` (``>``, ``>=``,
``<``, ``<=``), ``threshold``; optional ``for_s`` (seconds the condition must
hold before the alert fires, default 0), ``window_s`` (the window of rates and
quantiles in the exported PromQL, and of ``prefix_hit_rate_drop``'s current
rate, default 60), ``baseline_s`` (``prefix_hit_rate_drop``'s baseline window,
default 600) and ``severity`` (default ``warning``). A file that does not read
as rules is one :class:`~kvlab.errors.ConfigError` naming ``file:line``.

Invariant of :class:`AlertState`: a rule is firing from the first sample at
which its condition has held for ``for_s`` until the first sample at which it
does not hold; a sample without the value (server down, no traffic) does not
hold, as a missing series does not in Prometheus.
"""

from __future__ import annotations

import difflib
import math
import operator
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kvlab.errors import ConfigError
from kvlab.monitor.sampler import Sample
from kvlab.stress.slo import DEFAULT_MAX_KV_USAGE, DEFAULT_TTFT_P99_S

#: Rule metrics: what each means on a sample (fractions are 0-1).
METRICS: dict[str, str] = {
    "kv_cache_usage_perc": "KV cache usage, a fraction 0-1 (vLLM's kv_cache_usage_perc)",
    "num_requests_running": "requests running",
    "num_requests_waiting": "requests waiting",
    "preemptions_per_s": "preemptions per second over the last interval",
    "prefix_hit_rate": "prefix cache hits / queries (tokens) over the last interval",
    "prefix_hit_rate_drop": "hit rate over baseline_s minus hit rate over window_s",
    "ttft_p99_s": "time to first token p99 over the last interval (s)",
    "itl_p99_s": "inter-token latency p99 over the last interval (s)",
    "generation_tokens_per_s": "output tokens per second over the last interval",
}
#: Metrics that are fractions: a threshold above 1 is a mistake (90 for 90 %).
FRACTIONS = ("kv_cache_usage_perc", "prefix_hit_rate", "prefix_hit_rate_drop")
OPS: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
}
FIELDS = ("name", "metric", "op", "threshold", "for_s", "window_s", "baseline_s", "severity")


@dataclass(frozen=True)
class Rule:
    """One threshold: ``metric op threshold`` held for ``for_s`` seconds fires."""

    name: str
    metric: str
    op: str
    threshold: float
    for_s: float = 0.0
    window_s: float = 60.0
    baseline_s: float = 600.0
    severity: str = "warning"

    def holds(self, value: float | None) -> bool:
        return value is not None and not math.isnan(value) and OPS[self.op](value, self.threshold)


#: The rules used when no file is given (the thresholds docs/monitor.md explains). KV
#: usage and TTFT come from the stress SLO's defaults (:mod:`kvlab.stress.slo`: one
#: number for a stress verdict and a monitor alert); the stress preemption budget of 0
#: per run is "any preemption"; the queue and hit-rate thresholds are the monitor's own.
#: ``kvlab monitor --rules-from-stress`` derives all of them from a stress run instead.
DEFAULT_RULES: tuple[Rule, ...] = (
    Rule("KvCacheNearlyFull", "kv_cache_usage_perc", ">", DEFAULT_MAX_KV_USAGE, for_s=60),
    Rule("Preempting", "preemptions_per_s", ">", 0.0, for_s=0, severity="critical"),
    Rule("RequestsQueued", "num_requests_waiting", ">", 0.0, for_s=120),
    Rule("PrefixHitRateDrop", "prefix_hit_rate_drop", ">", 0.2, for_s=60, baseline_s=600),
    Rule("TtftP99AboveSlo", "ttft_p99_s", ">", DEFAULT_TTFT_P99_S, for_s=60),
)
#: Where each default threshold comes from (written by ``--save-rules``).
DEFAULT_SOURCES: dict[str, str] = {
    "KvCacheNearlyFull": "the stress SLO's KV usage ceiling (kvlab.stress.slo."
    "DEFAULT_MAX_KV_USAGE): a stress scenario whose peak usage is above it fails",
    "Preempting": "the stress SLO's preemption budget of 0 per run: any preemption",
    "RequestsQueued": "not a stress figure: the monitor's default (a queue that does not drain)",
    "PrefixHitRateDrop": "not a stress figure: the monitor's default",
    "TtftP99AboveSlo": "the stress SLO's TTFT p99 limit (kvlab.stress.slo.DEFAULT_TTFT_P99_S)",
}


# -- loading --------------------------------------------------------------------
def _fail(path: Path, line: int, msg: str) -> ConfigError:
    return ConfigError(f"{path}:{line}: {msg}")


def _scalar(path: Path, node: Any, key: str, kind: str) -> Any:
    import yaml

    line = node.start_mark.line + 1
    if not isinstance(node, yaml.ScalarNode):
        return _raise(_fail(path, line, f"field {key!r} must be a single value"))
    text = node.value
    if kind == "str":
        return text
    try:
        v = float(text)
    except ValueError:
        return _raise(_fail(path, line, f"field {key!r} must be a number, got {text!r}"))
    if math.isnan(v) or math.isinf(v) or (key != "threshold" and v < 0):
        return _raise(_fail(path, line, f"field {key!r} must be a finite number >= 0, got {text}"))
    return v


def _raise(e: Exception) -> Any:
    raise e


def _rule(path: Path, node: Any, index: int) -> Rule:
    import yaml

    line = node.start_mark.line + 1
    if not isinstance(node, yaml.MappingNode):
        raise _fail(path, line, f"rule {index + 1} must be a mapping of {', '.join(FIELDS)}")
    got: dict[str, Any] = {}
    lines: dict[str, int] = {}
    for k_node, v_node in node.value:
        key = str(k_node.value)
        kl = k_node.start_mark.line + 1
        if key not in FIELDS:
            near = difflib.get_close_matches(key, FIELDS, n=1)
            hint = f" (did you mean {near[0]!r}?)" if near else f"; fields: {', '.join(FIELDS)}"
            raise _fail(path, kl, f"unknown field {key!r} in rule {index + 1}{hint}")
        kind = "str" if key in ("name", "metric", "op", "severity") else "num"
        got[key] = _scalar(path, v_node, key, kind)
        lines[key] = v_node.start_mark.line + 1
    for key in ("name", "metric", "op", "threshold"):
        if key not in got:
            raise _fail(path, line, f"rule {index + 1} has no {key!r}")
    metric = got["metric"]
    if metric not in METRICS:
        near = difflib.get_close_matches(metric, METRICS, n=1)
        hint = f"did you mean {near[0]!r}?" if near else f"choose one of {', '.join(METRICS)}"
        raise _fail(path, lines["metric"], f"unknown metric {metric!r}; {hint}")
    if got["op"] not in OPS:
        raise _fail(path, lines["op"], f"op must be one of {' '.join(OPS)}, got {got['op']!r}")
    if metric in FRACTIONS and not -1.0 <= got["threshold"] <= 1.0:
        raise _fail(
            path,
            lines["threshold"],
            f"{metric} is a fraction 0-1 (vLLM exposes 0.9 for 90 %), got {got['threshold']:g}",
        )
    return Rule(**got)


def load_rules(path: Path) -> tuple[Rule, ...]:
    """The rules of a YAML file (``rules:`` list, or a bare list); ConfigError with
    ``file:line`` when it does not read as rules."""
    import yaml

    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read the rules file: {e}") from None
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 1
        raise _fail(path, line, f"not YAML: {getattr(e, 'problem', None) or e}") from None
    if root is None:
        raise _fail(path, 1, "empty rules file; expected 'rules:' and a list of rules")
    items = root
    if isinstance(root, yaml.MappingNode):
        keys = {str(k.value): v for k, v in root.value}
        if set(keys) != {"rules"}:
            bad = next(k for k, _ in root.value if str(k.value) != "rules")
            raise _fail(
                path, bad.start_mark.line + 1, f"unknown key {bad.value!r}; expected 'rules:'"
            )
        items = keys["rules"]
    if not isinstance(items, yaml.SequenceNode):
        raise _fail(path, items.start_mark.line + 1, "expected a list of rules")
    rules = tuple(_rule(path, n, i) for i, n in enumerate(items.value))
    names = [r.name for r in rules]
    for i, n in enumerate(names):
        if n in names[:i]:
            raise _fail(path, items.value[i].start_mark.line + 1, f"duplicate rule name {n!r}")
    return rules


def rules_yaml(
    rules: Iterable[Rule], sources: Mapping[str, str] | None = None, head: str = ""
) -> str:
    """``rules`` as a kvlab rules file (what :func:`load_rules` reads); ``sources``:
    rule name -> where its threshold came from, written as a comment above it;
    ``head``: comment lines after the first."""
    lines = ["# kvlab monitor alert rules (fractions are 0-1)"]
    lines += [f"# {x}" for x in head.splitlines()]
    lines.append("rules:")
    for r in rules:
        lines.append(f"  - name: {r.name}")
        if sources and r.name in sources:
            lines += [f"    # threshold from: {x}" for x in sources[r.name].splitlines()]
        lines += [
            f"    metric: {r.metric}  # {METRICS[r.metric]}",
            f'    op: "{r.op}"',
            f"    threshold: {r.threshold!r}",
            f"    for_s: {r.for_s:g}",
        ]
        if r.metric in ("prefix_hit_rate_drop",) or r.window_s != 60.0:
            lines.append(f"    window_s: {r.window_s:g}")
        if r.metric == "prefix_hit_rate_drop":
            lines.append(f"    baseline_s: {r.baseline_s:g}")
        lines.append(f"    severity: {r.severity}")
    return "\n".join(lines) + "\n"


# -- evaluation -------------------------------------------------------------------
@dataclass
class _HitHistory:
    """Prefix-cache token increments (t, queries, hits) of the last ``keep_s`` seconds."""

    keep_s: float
    rows: deque[tuple[float, float, float]] = field(default_factory=deque)

    def add(self, t: float, queries: float, hits: float) -> None:
        self.rows.append((t, queries, hits))
        while self.rows and self.rows[0][0] < t - self.keep_s:
            self.rows.popleft()

    def rate(self, t: float, span_s: float) -> float | None:
        q = h = 0.0
        for ti, qi, hi in self.rows:
            if ti > t - span_s:
                q += qi
                h += hi
        return h / q if q > 0 else None


def rule_value(rule: Rule, sample: Sample, history: _HitHistory | None = None) -> float | None:
    """The value ``rule`` compares on ``sample`` (None when not known)."""
    if rule.metric == "prefix_hit_rate_drop":
        if history is None:
            return None
        base = history.rate(sample.t_unix, rule.baseline_s)
        cur = history.rate(sample.t_unix, rule.window_s)
        return None if base is None or cur is None else base - cur
    v = getattr(sample, rule.metric)
    return None if v is None else float(v)


@dataclass(frozen=True)
class AlertEvent:
    """A rule started firing or resolved on one server."""

    event: str  # firing | resolved
    rule: str
    url: str
    t_unix: float
    value: float | None
    threshold: float
    metric: str
    severity: str

    def to_dict(self) -> dict[str, Any]:
        return {"type": "alert", **self.__dict__}


class AlertState:
    """The rules' state on one server (see the module for the invariant)."""

    def __init__(self, rules: Sequence[Rule]) -> None:
        self.rules = tuple(rules)
        self.pending_since: dict[str, float] = {}
        self.firing: dict[str, float] = {}
        keep = max((r.baseline_s for r in self.rules), default=0.0)
        self.history = _HitHistory(keep)

    def evaluate(self, sample: Sample) -> list[AlertEvent]:
        """Events that ``sample`` causes (in rule order)."""
        t = sample.t_unix
        if sample.up and sample.prefix_queries_tokens is not None:
            hits = (sample.prefix_hit_rate or 0.0) * sample.prefix_queries_tokens
            self.history.add(t, sample.prefix_queries_tokens, hits)
        out: list[AlertEvent] = []
        for r in self.rules:
            v = rule_value(r, sample, self.history) if sample.up else None
            if r.holds(v):
                since = self.pending_since.setdefault(r.name, t)
                if r.name not in self.firing and t - since >= r.for_s:
                    self.firing[r.name] = t
                    out.append(self._event("firing", r, sample, v))
            else:
                self.pending_since.pop(r.name, None)
                if self.firing.pop(r.name, None) is not None:
                    out.append(self._event("resolved", r, sample, v))
        return out

    @staticmethod
    def _event(kind: str, r: Rule, s: Sample, v: float | None) -> AlertEvent:
        return AlertEvent(kind, r.name, s.url, s.t_unix, v, r.threshold, r.metric, r.severity)


# -- Prometheus export ---------------------------------------------------------------
def _dur(s: float) -> str:
    """A Prometheus duration (``60s``, ``1500ms``)."""
    return f"{round(s)}s" if float(s).is_integer() else f"{round(s * 1000)}ms"


def _spellings(names: Sequence[str]) -> tuple[str, ...]:
    """Each vLLM name as exposed (``vllm:x``) and as stored when the scrape negotiated
    OpenMetrics with underscore escaping (``vllm_x``: prometheus_client 0.2x, which
    vLLM serves its metrics with, escapes the colon for Prometheus 2.x scrapers)."""
    return tuple(n for name in names for n in (name, name.replace(":", "_", 1)))


def _gauge(names: Sequence[str]) -> str:
    return "(" + " or ".join(_spellings(names)) + ")"


def _counter_rate(names: Sequence[str], window_s: float) -> str:
    """The per-second rate of a counter under any of its names."""
    return " or ".join(f"rate({n}[{_dur(window_s)}])" for n in _spellings(names))


def _hit_rate(window_s: float) -> str:
    hits = _counter_rate(
        ("vllm:prefix_cache_hits_total", "vllm:gpu_prefix_cache_hits_total"), window_s
    )
    queries = _counter_rate(
        ("vllm:prefix_cache_queries_total", "vllm:gpu_prefix_cache_queries_total"), window_s
    )
    return f"({hits}) / ({queries})"


def _quantile(names: Sequence[str], window_s: float) -> str:
    inner = " or ".join(f"rate({n}_bucket[{_dur(window_s)}])" for n in _spellings(names))
    return f"histogram_quantile(0.99, sum by (le, instance, job) ({inner}))"


def promql(rule: Rule) -> str:
    """The PromQL condition of ``rule`` over vLLM's metric names: both generations
    (``kv_cache_usage_perc``, legacy ``gpu_cache_usage_perc``) and both spellings
    (``vllm:``, and ``vllm_`` as an OpenMetrics scrape stores them)."""
    w = rule.window_s
    m = rule.metric
    expr = {
        "kv_cache_usage_perc": _gauge(("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc")),
        "num_requests_running": _gauge(("vllm:num_requests_running",)),
        "num_requests_waiting": _gauge(("vllm:num_requests_waiting",)),
        "preemptions_per_s": f"({_counter_rate(('vllm:num_preemptions_total',), w)})",
        "prefix_hit_rate": f"({_hit_rate(w)})",
        "prefix_hit_rate_drop": f"(({_hit_rate(rule.baseline_s)}) - ({_hit_rate(w)}))",
        "ttft_p99_s": _quantile(("vllm:time_to_first_token_seconds",), w),
        "itl_p99_s": _quantile(
            ("vllm:inter_token_latency_seconds", "vllm:time_per_output_token_seconds"), w
        ),
        "generation_tokens_per_s": f"({_counter_rate(('vllm:generation_tokens_total',), w)})",
    }[m]
    return f"{expr} {rule.op} {rule.threshold:g}"


def prometheus_rules(rules: Iterable[Rule], group: str = "kvlab-kv-cache") -> str:
    """Prometheus alerting rules (YAML) equivalent to ``rules``."""
    import yaml

    doc = {
        "groups": [
            {
                "name": group,
                "rules": [
                    {
                        "alert": r.name,
                        "expr": promql(r),
                        "for": _dur(r.for_s),
                        "labels": {"severity": r.severity, "source": "kvlab"},
                        "annotations": {
                            "summary": f"{r.metric} {r.op} {r.threshold:g}",
                            "description": METRICS[r.metric],
                        },
                    }
                    for r in rules
                ],
            }
        ]
    }
    head = "# Prometheus alerting rules written by `kvlab monitor --export-rules`.\n"
    head += "# vLLM metric names; kv_cache_usage_perc and hit rates are fractions (0-1).\n"
    return head + yaml.safe_dump(doc, sort_keys=False, width=200)


__all__ = [
    "DEFAULT_RULES",
    "DEFAULT_SOURCES",
    "FRACTIONS",
    "METRICS",
    "AlertEvent",
    "AlertState",
    "Rule",
    "load_rules",
    "prometheus_rules",
    "promql",
    "rule_value",
    "rules_yaml",
]
