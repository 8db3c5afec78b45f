"""Alert rules: loading (errors name file:line), firing/resolved, Prometheus export."""

from __future__ import annotations

from pathlib import Path

import pytest

from kvlab.errors import ConfigError
from kvlab.monitor.alerts import (
    DEFAULT_RULES,
    AlertState,
    Rule,
    load_rules,
    prometheus_rules,
    promql,
    rules_yaml,
)
from kvlab.monitor.sampler import Sample

H = "rules:\n  - name: A\n"


def sample(t: float, **kw: object) -> Sample:
    return Sample("http://s/metrics", t, True, **kw)  # type: ignore[arg-type]


def test_usage_fires_after_for_and_resolves() -> None:
    st = AlertState([Rule("Full", "kv_cache_usage_perc", ">", 0.9, for_s=60)])
    assert st.evaluate(sample(0, kv_cache_usage_perc=0.95)) == []  # pending
    assert st.evaluate(sample(59, kv_cache_usage_perc=0.97)) == []
    fired = st.evaluate(sample(60, kv_cache_usage_perc=0.96))
    assert [(e.event, e.rule, e.value) for e in fired] == [("firing", "Full", 0.96)]
    assert st.evaluate(sample(61, kv_cache_usage_perc=0.99)) == []  # fires once
    res = st.evaluate(sample(62, kv_cache_usage_perc=0.5))
    assert [e.event for e in res] == ["resolved"]
    # a dip resets the pending time
    st.evaluate(sample(70, kv_cache_usage_perc=0.95))
    st.evaluate(sample(100, kv_cache_usage_perc=0.2))
    assert st.evaluate(sample(129, kv_cache_usage_perc=0.95)) == []
    assert st.evaluate(sample(150, kv_cache_usage_perc=0.95)) == []


def test_down_server_resolves_like_a_missing_series() -> None:
    st = AlertState([Rule("Q", "num_requests_waiting", ">", 0, for_s=0)])
    assert [e.event for e in st.evaluate(sample(0, num_requests_waiting=3))] == ["firing"]
    down = Sample("http://s/metrics", 1, False, "unreachable", "cannot reach")
    assert [e.event for e in st.evaluate(down)] == ["resolved"]


def test_hit_rate_drop_against_baseline() -> None:
    r = Rule("Drop", "prefix_hit_rate_drop", ">", 0.2, window_s=10, baseline_s=100)
    st = AlertState([r])
    for t in range(0, 90, 10):  # a steady 0.6 hit rate
        assert st.evaluate(sample(t, prefix_hit_rate=0.6, prefix_queries_tokens=1000)) == []
    ev = st.evaluate(sample(90, prefix_hit_rate=0.1, prefix_queries_tokens=1000))
    # baseline over 100 s: (9*600 + 100) / 10000 = 0.55; current 0.1: drop 0.45
    assert [e.event for e in ev] == ["firing"]
    assert ev[0].value == pytest.approx(0.45)


def test_default_rules_roundtrip(tmp_path: Path) -> None:
    p = tmp_path / "r.yaml"
    p.write_text(rules_yaml(DEFAULT_RULES))
    assert load_rules(p) == DEFAULT_RULES


@pytest.mark.parametrize(
    ("text", "where", "says"),
    [
        (
            H + "    metric: kv_cache_usage_perc\n    op: '>'\n    treshold: 0.9\n",
            ":5:",
            "unknown field 'treshold' in rule 1 (did you mean 'threshold'?)",
        ),
        (
            H + "    metric: kv_usage\n    op: '>'\n    threshold: 1\n",
            ":3:",
            "unknown metric 'kv_usage'",
        ),
        (
            H + "    metric: kv_cache_usage_perc\n    op: '>'\n    threshold: 90\n",
            ":5:",
            "is a fraction 0-1",
        ),
        (
            H + "    metric: num_requests_waiting\n    op: '=>'\n    threshold: 0\n",
            ":4:",
            "op must be one of",
        ),
        (
            H + "    metric: num_requests_waiting\n    op: '>'\n    threshold: x\n",
            ":5:",
            "must be a number",
        ),
        (
            H + "    metric: num_requests_waiting\n    threshold: 0\n",
            ":2:",
            "has no 'op'",
        ),
        ("rules:\n  - name: A\n   metric: x\n", ":3:", "not YAML"),
        ("alerts: []\n", ":1:", "unknown key 'alerts'"),
        ("", ":1:", "empty rules file"),
    ],
)
def test_bad_rules_file_is_one_line_with_file_and_line(
    tmp_path: Path, text: str, where: str, says: str
) -> None:
    p = tmp_path / "rules.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_rules(p)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"{p}{where}") and says in msg, msg


def test_promql_uses_vllm_names_and_fractions() -> None:
    usage = promql(DEFAULT_RULES[0])
    assert usage == (
        "(vllm:kv_cache_usage_perc or vllm_kv_cache_usage_perc or vllm:gpu_cache_usage_perc"
        " or vllm_gpu_cache_usage_perc) > 0.95"
    )
    assert promql(DEFAULT_RULES[1]) == (
        "(rate(vllm:num_preemptions_total[60s]) or rate(vllm_num_preemptions_total[60s])) > 0"
    )
    drop = promql(DEFAULT_RULES[3])
    assert "rate(vllm:prefix_cache_hits_total[600s])" in drop
    assert "rate(vllm:gpu_prefix_cache_queries_total[60s])" in drop
    text = prometheus_rules(DEFAULT_RULES)
    assert "alert: KvCacheNearlyFull" in text and "for: 60s" in text
    assert promql(Rule("T", "ttft_p99_s", ">", 2.5, window_s=0.5)) == (
        "histogram_quantile(0.99, sum by (le, instance, job) "
        "(rate(vllm:time_to_first_token_seconds_bucket[500ms]) or "
        "rate(vllm_time_to_first_token_seconds_bucket[500ms]))) > 2.5"
    )
