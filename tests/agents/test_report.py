"""Reports: seeded, consistent tables the checker verifies; the Monte Carlo is seeded."""

from __future__ import annotations

import json

import pytest

from kvlab.agents.montecarlo import run_monte_carlo
from kvlab.agents.report import (
    TABLE_EVERY,
    YEARS,
    check_report,
    companies,
    fmt,
    parse_tables,
    render_report,
)
from kvlab.agents.workflow import (
    COMPANY_TOOLS,
    FINAL_TOOL,
    ScriptedPolicy,
    Workflow,
    WorkflowConfig,
    fact_retention,
    workflow_facts,
)
from kvlab.errors import ConfigError


def test_companies_are_seeded_and_consistent() -> None:
    a, b = companies(4, seed=1), companies(4, seed=1)
    assert a == b
    assert companies(4, seed=2) != a
    for c in a:
        assert len(c.revenue) == len(YEARS)
        assert all(e < r for e, r in zip(c.ebitda, c.revenue, strict=True))
        assert c.funded_status(0) == round(c.assets[0] - c.liabilities[0], 1)


def test_report_tables_check_and_repeat() -> None:
    c = companies(1)[0]
    report = render_report(c, pages=25, page_words=50)
    assert report == render_report(c, pages=25, page_words=50)
    assert report.count("## Page ") == 25
    tables = parse_tables(report)
    assert len(tables) == 1 + 25 // TABLE_EVERY
    assert check_report(report, c) == []
    assert tables[0]["Revenue"] == c.revenue


def test_checker_finds_a_changed_figure() -> None:
    c = companies(1)[0]
    report = render_report(c, pages=10, page_words=20)
    bad = report.replace(fmt(c.revenue[-1]), fmt(c.revenue[-1] + 1), 1)
    assert check_report(bad, c) != []
    assert check_report("no tables here", c) == ["no figures table"]


def test_default_report_is_about_150_kb() -> None:
    c = companies(1)[0]
    n = len(render_report(c, pages=50).encode())
    assert 100_000 < n < 200_000


def test_monte_carlo_seeded_statistics() -> None:
    s1 = run_monte_carlo(1000.0, 1200.0, 30.0, seed=3)
    assert s1 == run_monte_carlo(1000.0, 1200.0, 30.0, seed=3)
    assert s1.runs == 10_000 and s1.years == 30
    assert s1.p5_ratio <= s1.p50_ratio <= s1.p95_ratio
    assert 0.0 <= s1.prob_underfunded <= 1.0
    rich = run_monte_carlo(5000.0, 1000.0, 0.0, seed=3)
    assert rich.prob_underfunded < s1.prob_underfunded
    with pytest.raises(ConfigError):
        run_monte_carlo(-1.0, 1.0, 0.0)


def test_workflow_sequence_and_tools() -> None:
    wf = Workflow(WorkflowConfig(num_companies=2, pages=3, page_words=20, mc_runs=200))
    policy = ScriptedPolicy(wf)
    results: dict = {}
    tools = []
    for step in range(wf.config.num_model_calls):
        d = policy.decide(step, results)
        tools.append(d.tool)
        if d.tool is None:
            break
        out = wf.call(d.tool, d.args)
        if d.tool in ("extract_figures", "run_monte_carlo"):
            results[f"{d.tool}:{d.company}"] = json.loads(out)
        if d.tool == "calc":
            c = wf.company(str(d.company))
            assert float(out) == pytest.approx(c.assets[-1] / c.liabilities[-1])
    assert tools == [*COMPANY_TOOLS, *COMPANY_TOOLS, FINAL_TOOL, None]
    assert wf.masterplan is not None
    assert fact_retention(wf.key_facts(), wf.masterplan) == 1.0
    assert fact_retention(wf.key_facts(), "") == 0.0


def test_extract_needs_fetch_and_unknown_tool() -> None:
    wf = Workflow(WorkflowConfig(num_companies=1, pages=1, page_words=5))
    with pytest.raises(ConfigError, match="not fetched"):
        wf.call("extract_figures", {"company": wf.companies[0].name})
    with pytest.raises(ConfigError, match="unknown tool"):
        wf.call("rm", {})


def test_workflow_facts_keep_the_key_figures() -> None:
    wf = Workflow(WorkflowConfig(num_companies=1, pages=12, page_words=30))
    c = wf.companies[0]
    report = wf.call("fetch_annual_report", {"company": c.name})
    facts = workflow_facts(report, 1200)
    assert len(facts) <= 1200
    assert fact_retention(c.key_facts(), facts) == 1.0
    js = wf.call("extract_figures", {"company": c.name})
    assert fact_retention(c.key_facts(), workflow_facts(js, 1200)) == 1.0
