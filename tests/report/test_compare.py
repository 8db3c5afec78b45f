from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kvlab.cli.app import app
from kvlab.errors import ConfigError
from kvlab.report.compare import (
    Metric,
    check_conditions,
    compare,
    compare_values,
    metric,
    metric_value,
    parse_condition,
    to_markdown,
)
from kvlab.results import RequestRecord, RunResult, summarize

runner = CliRunner()


def make_run(ttft: float, cached: int, *, extra: float = 0.0) -> RunResult:
    """Two planner and two subagent requests; planner TTFT = ttft, subagent TTFT = ttft/2."""
    recs = []
    for i, cls in enumerate(["planner", "planner", "subagent", "subagent"]):
        t = ttft if cls == "planner" else ttft / 2
        recs.append(
            RequestRecord(
                request_id=f"r{i}",
                arrival_s=float(i),
                prompt_tokens=100,
                output_tokens=11,
                session_id=f"s{i % 2}",
                cls=cls,
                admitted_s=float(i),
                first_token_s=i + t,
                finish_s=i + t + 1.0 + extra,
                cached_tokens=cached,
                hit_tokens_by_retention={"system": cached // 2, "context": cached - cached // 2}
                if cached
                else None,
            )
        )
    return RunResult(records=recs, summary=summarize(recs))


def test_compare_values_best_and_deltas() -> None:
    c = compare_values(Metric("ttft_s.p99"), [2.0, 1.0, 4.0])
    assert c["deltas"] == [0.0, -1.0, 2.0]
    assert c["rel_deltas"] == [0.0, -0.5, 1.0]
    assert c["best"] == [1]
    assert compare_values(Metric("x", True), [2.0, 1.0, 4.0])["best"] == [2]
    assert compare_values(Metric("x", True), [2.0, 4.0, 4.0])["best"] == [1, 2]
    assert compare_values(Metric("x"), [1.0, 1.0])["best"] == []  # tie
    assert compare_values(Metric("x"), [1.0, None])["best"] == []
    assert compare_values(Metric("x"), [None, 1.0])["deltas"] == [None, None]


def test_metric_lookup() -> None:
    assert metric("prefix_cache_hit_rate").higher_is_better
    assert not metric("ttft_s.p50").higher_is_better
    assert metric("kv_cache_usage_perc.mean").higher_is_better
    assert metric_value({"a": {"b": 2}}, "a.b") == 2.0
    assert metric_value({"a": {"b": None}}, "a.b") is None
    assert metric_value({"a": 1}, "a.b") is None


def test_compare_overall_by_class_and_retention() -> None:
    base, pref = make_run(2.0, 0), make_run(1.0, 64)
    cmp = compare([("baseline", base), ("prefix", pref)])
    o = cmp["overall"]
    assert o["prefix_cache_hit_rate"]["values"] == [0.0, 0.64]
    assert o["prefix_cache_hit_rate"]["best"] == [1]
    assert o["ttft_s.mean"]["values"] == [1.5, 0.75]
    assert o["ttft_s.mean"]["deltas"] == [0.0, -0.75]
    g = cmp["groups"]
    assert set(g) == {"planner", "subagent"}
    assert g["planner"]["ttft_s.mean"]["values"] == [2.0, 1.0]
    assert g["subagent"]["ttft_s.mean"]["values"] == [1.0, 0.5]
    r = cmp["hit_tokens_by_retention"]
    assert list(r) == ["system", "context"]
    assert r["system"]["values"] == [0.0, 128.0]
    md = to_markdown(cmp)
    assert "| prefix_cache_hit_rate | 0.0% | 64.0% | +64.0 pt | prefix |" in md
    assert "## class planner" in md and "## Prompt hit tokens by retention class" in md
    by_session = compare([("a", base), ("b", pref)], by="session_id")
    assert set(by_session["groups"]) == {"s0", "s1"}


def test_compare_uses_summary_by_class_when_present() -> None:
    run = make_run(1.0, 0)
    run.summary["by_class"] = {"x": {"ttft_s": {"mean": 9.0}}}
    cmp = compare([("a", run)], [Metric("ttft_s.mean")])
    assert cmp["groups"] == {"x": {"ttft_s.mean": compare_values(Metric("ttft_s.mean"), [9.0])}}


def test_conditions() -> None:
    runs = [("base", make_run(2.0, 0)), ("new", make_run(3.0, 0))]
    assert check_conditions(runs, [parse_condition("ttft_s.mean>5")]) == []
    assert check_conditions(runs, [parse_condition("ttft_s.mean>2")]) == [
        "new: ttft_s.mean>2 (value 2.25)"
    ]
    assert check_conditions(runs, [parse_condition("rel:ttft_s.mean>0.1")]) == [
        "new: rel:ttft_s.mean>0.1 (rel 0.5)"
    ]
    assert check_conditions(runs, [parse_condition("delta:ttft_s.mean<=0")]) == []
    with pytest.raises(ConfigError, match="bad --fail-if"):
        parse_condition("ttft_s.mean")
    with pytest.raises(ConfigError, match="in no run's summary"):
        check_conditions(runs, [parse_condition("nope>1")])


def _save(tmp_path: Path, name: str, run: RunResult) -> Path:
    return run.save(tmp_path / name)


def test_cli_compare(tmp_path: Path) -> None:
    a = _save(tmp_path, "baseline", make_run(2.0, 0))
    b = _save(tmp_path, "prefix", make_run(1.0, 64))
    res = runner.invoke(app, ["compare", str(a), str(b)])
    assert res.exit_code == 0, res.output
    assert "| ttft_s.mean | 1.5 | 0.75 | -0.75 (-50%) | prefix |" in res.output
    res = runner.invoke(app, ["compare", str(a), str(b), "--json", "--by", "none"])
    d = json.loads(res.output)
    assert d["runs"] == ["baseline", "prefix"] and "groups" not in d
    res = runner.invoke(app, ["compare", str(a), str(b), "--fail-if", "prefix_cache_hit_rate<0.5"])
    assert res.exit_code == 1
    assert "FAIL baseline: prefix_cache_hit_rate<0.5" in res.output
    out = tmp_path / "cmp.md"
    res = runner.invoke(
        app, ["compare", str(a), str(b), "--names", "x,y", "-o", str(out), "--metric", "ttft_s.p99"]
    )
    assert res.exit_code == 0 and out.read_text().startswith("## Overall (baseline: x)")
    res = runner.invoke(app, ["compare", str(tmp_path)])
    assert isinstance(res.exception, ConfigError)


def test_cli_compare_plots_the_timelines(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    runs = []
    for name, usage in (("baseline", [0.2, 0.6, 0.0]), ("prefix", [0.1, 0.3, 0.0])):
        run = make_run(1.0, 0)
        run.timeseries = {"t_s": [0.0, 1.0, 2.0], "kv_cache_usage_perc": usage}
        runs.append(str(_save(tmp_path, name, run)))
    res = runner.invoke(app, ["compare", *runs, "--plot", str(tmp_path / "fig" / "kv")])
    assert res.exit_code == 0, res.output
    svg = (tmp_path / "fig" / "kv.svg").read_text()
    assert "baseline" in svg and "prefix" in svg
    assert (tmp_path / "fig" / "kv.png").read_bytes()[:4] == b"\x89PNG"


def live_run(ttft: float, *, cached: int | None) -> RunResult:
    """make_run's requests as a live client records them: no admission time, no
    breakdown by retention class, and cached tokens only when usage reported them."""
    from kvlab.backends.base import build_result

    recs = make_run(ttft, 0).records
    for r in recs:
        r.admitted_s = r.hit_tokens_by_retention = None
        r.cached_tokens = cached
        r.computed_tokens = None if cached is None else r.prompt_tokens - cached
        r.offload_hit_tokens = r.num_preemptions = None
    return build_result("openai", recs, wall_s=5.0, record_source="usage.prompt_tokens_details")


def test_unknown_values_show_as_a_dash_never_as_zero(tmp_path: Path) -> None:
    sim = make_run(1.0, 64)
    live = live_run(1.5, cached=None)  # a server that reports no cached tokens
    cmp = compare([("sim", sim), ("live", live)])
    o = cmp["overall"]
    assert o["prefix_cache_hits"]["values"] == [256.0, None]
    assert o["prefix_cache_hits"]["deltas"] == [0.0, None]
    assert o["prefix_cache_hit_rate"]["values"] == [0.64, None]
    assert cmp["groups"]["planner"]["prefix_cache_hits"]["values"] == [128.0, None]
    assert cmp["hit_tokens_by_retention"]["system"]["values"] == [128.0, None]
    md = to_markdown(cmp)
    assert "-100%" not in md
    assert "| prefix_cache_hits | 256 | - | - | tie |" in md
    assert "| system | 128 | - | - | tie |" in md
    # reported zeros are zeros: a real -100%
    zero = compare([("sim", sim), ("live", live_run(1.5, cached=0))])
    assert zero["overall"]["prefix_cache_hits"]["values"] == [256.0, 0.0]
    assert zero["hit_tokens_by_retention"]["system"]["values"] == [128.0, 0.0]
    # the same through the run directories and the command
    a, b = _save(tmp_path, "sim", sim), _save(tmp_path, "live", live)
    res = runner.invoke(app, ["compare", str(a), str(b)])
    assert res.exit_code == 0, res.output
    assert "| prefix_cache_hits | 256 | - | - | tie |" in res.output
    assert "-100%" not in res.output


def test_a_simulation_is_not_ranked_against_a_measured_run(tmp_path: Path) -> None:
    sim = make_run(1.0, 64)
    sim.provenance["backend"] = "sim"
    live = live_run(1.5, cached=0)
    cmp = compare([("sim", sim), ("live", live)])
    assert cmp["ranked"] is False
    assert all(c["best"] == [] for c in cmp["overall"].values())
    assert all(c["best"] == [] for g in cmp["groups"].values() for c in g.values())
    md = to_markdown(cmp)
    assert "not ranked" in md
    assert "| prefix_cache_hits | 256 | 0 | -256 (-100%) | - |" in md
    # two simulations, or two measured runs, are ranked as before
    other = make_run(2.0, 0)
    other.provenance["backend"] = "sim"
    both = compare([("a", sim), ("b", other)])
    assert both["ranked"] is True and both["overall"]["ttft_s.mean"]["best"] == [0]
    assert compare([("x", live), ("y", live_run(2.0, cached=0))])["ranked"] is True
