from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from kvlab.errors import ConfigError
from kvlab.workload.generators import SHAPES, generate, make_params, parse_assignments
from kvlab.workload.generators.arrivals import start_times, think_times
from kvlab.workload.generators.sessions import SessionsParams
from kvlab.workload.io import read_workload, write_workload
from kvlab.workload.records import RETENTION_CLASSES, Workload
from kvlab.workload.stats import prefix_reuse_bound

SMALL = {
    "chat": {"sessions": 20},
    "planner": {"sessions": 4},
    "subagents": {"sessions": 3},
    "sessions": {"sessions": 5},
    "agentic": {"sessions": 2, "report_tokens": 800},
    "mixed": {"sessions": 30},
    "rag": {"sessions": 30},
}


def test_every_shape_has_a_small_config() -> None:
    assert set(SMALL) == set(SHAPES)


@pytest.mark.parametrize("shape", list(SHAPES))
def test_conformance(shape: str, tmp_path: Path) -> None:
    w = generate(shape, seed=3, **SMALL[shape])
    assert len(w) > 0 and w.name == shape
    assert w.meta["generator"] == shape and w.meta["seed"] == 3
    # Deterministic per seed; another seed gives another workload.
    assert generate(shape, seed=3, **SMALL[shape]).requests == w.requests
    assert generate(shape, seed=4, **SMALL[shape]).requests != w.requests
    # Passes the file validation (ids unique, sessions well formed, sorted) and round-trips.
    back = read_workload(write_workload(w, tmp_path / "w.jsonl"))
    assert back.requests == w.requests
    # The header's params regenerate the same workload.
    assert generate(shape, seed=back.meta["seed"], **back.meta["params"]).requests == w.requests
    for r in w.requests:
        assert r.prompt_tokens >= 1 and r.output_tokens >= 1
        assert all(s.tokens > 0 and s.retention in RETENTION_CLASSES for s in r.segments)
        assert r.cls is not None


@pytest.mark.parametrize("shape", ["sessions", "planner", "agentic"])
def test_history_is_resent(shape: str) -> None:
    w = generate(shape, seed=0, **SMALL[shape])
    by_session: dict[str, list] = {}  # type: ignore[type-arg]
    for r in w.requests:
        by_session.setdefault(str(r.session_id), []).append(r)
    for turns in by_session.values():
        for prev, nxt in itertools.pairwise(turns):
            assert nxt.think_time_s is not None and nxt.arrival_s is None
            # next prompt = previous prompt (with the last user turn now 'context') + more
            prev_ids = [(s.content_id, s.tokens) for s in prev.segments]
            nxt_ids = [(s.content_id, s.tokens) for s in nxt.segments]
            assert nxt_ids[: len(prev_ids)] == prev_ids
            # ... and then the previous answer, named by its output content id
            assert nxt.segments[len(prev_ids)].content_id == prev.output_content_id
            assert nxt.segments[len(prev_ids)].tokens == prev.output_tokens


def test_chat_bound_is_analytic() -> None:
    for sys_tokens, block in [(1024, 16), (1000, 16), (300, 128)]:
        w = generate("chat", seed=1, sessions=50, system_tokens=sys_tokens)
        b = prefix_reuse_bound(w, block)
        assert b.hit_tokens == 49 * (sys_tokens // block) * block
        assert b.hit_tokens_by_retention == {"system": b.hit_tokens}
        total = sum(r.prompt_tokens for r in w.requests)
        assert b.hit_rate == pytest.approx(49 * (sys_tokens // block) * block / total)


def test_rag_sorting_raises_reuse() -> None:
    base = prefix_reuse_bound(generate("rag", seed=2, sessions=300)).hit_rate
    srt = prefix_reuse_bound(generate("rag", seed=2, sessions=300, sort_documents=True)).hit_rate
    assert srt > base


def test_mixed_has_no_reuse_and_both_classes() -> None:
    w = generate("mixed", seed=0, sessions=200)
    assert prefix_reuse_bound(w).hit_tokens == 0
    classes = {r.cls for r in w.requests}
    assert classes == {"short", "long"}


def test_agentic_shape() -> None:
    w = generate("agentic", seed=0, sessions=1, companies=8, length_cv=0)
    assert len(w) == 10
    last = w.requests[-1]
    assert last.cls == "synthesis" and last.output_tokens == 1200
    kinds = [s.content_id.rsplit("/", 1)[-1] for s in last.segments if s.kind == "tool_output"]
    assert kinds == ["report"] * 8 + ["montecarlo"]
    assert last.prompt_tokens == 1200 + 2500 + 400 + 9 * 60 + 8 * 5000 + 1500


def test_subagents_classes_and_roles() -> None:
    w = generate("subagents", seed=0, sessions=2, fanout=3, roles=2, planner_steps=2)
    classes = [r.cls for r in w.requests]
    assert classes.count("planner") == 4
    assert classes.count("subagent") == 2 * 3 * 2  # tasks x fanout x subagent_steps
    roles = {r.segments[0].content_id for r in w.requests if r.cls == "subagent"}
    assert roles <= {"subagents/role0", "subagents/role1"}


def test_zero_length_parameter_drops_segment() -> None:
    w = generate("chat", seed=0, sessions=2, system_tokens=0)
    assert all(s.kind != "system" for r in w.requests for s in r.segments)


def test_bad_parameters() -> None:
    with pytest.raises(ConfigError, match="unknown workload shape 'nope'; choose one of chat"):
        generate("nope")
    with pytest.raises(ConfigError, match="unknown parameter 'sesions'"):
        generate("chat", sesions=3)
    with pytest.raises(ConfigError, match="sessions must be >= 1"):
        generate("chat", sessions=0)
    with pytest.raises(ConfigError, match="must be int"):
        generate("chat", sessions="many")
    with pytest.raises(ConfigError, match="unknown arrival"):
        generate("chat", arrival="uniform")
    assert parse_assignments("rag", ["top_k=5", "sort-documents=yes"]) == {
        "top_k": "5",
        "sort_documents": "yes",
    }
    p = make_params("rag", top_k="5", sort_documents="yes", zipf_s="0.8")
    assert (p.top_k, p.sort_documents, p.zipf_s) == (5, True, 0.8)  # type: ignore[attr-defined]
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_assignments("rag", ["top_k"])


def test_arrival_processes() -> None:
    rng = np.random.default_rng(0)
    t = start_times(rng, 20001, process="poisson", rate_per_s=4.0)
    gaps = np.diff(t)
    assert t[0] == 0.0 and np.all(gaps >= 0)
    assert gaps.mean() == pytest.approx(0.25, rel=0.03)
    assert gaps.std() / gaps.mean() == pytest.approx(1.0, rel=0.05)
    g = np.diff(start_times(rng, 20001, process="gamma", rate_per_s=4.0, burstiness=0.25))
    assert g.mean() == pytest.approx(0.25, rel=0.05)
    assert g.std() / g.mean() == pytest.approx(2.0, rel=0.08)  # cv = 1/sqrt(burstiness)
    c = start_times(rng, 10, process="closed", ramp_s=5.0)
    assert np.all((c >= 0) & (c <= 5)) and np.all(np.diff(c) >= 0)
    assert np.all(start_times(rng, 3, process="closed") == 0)
    assert think_times(rng, 4, 0.0).tolist() == [0.0] * 4
    assert think_times(rng, 20000, 2.0).mean() == pytest.approx(2.0, rel=0.05)


def test_closed_loop_chat() -> None:
    w = generate("chat", seed=0, sessions=4, turns=3, arrival="closed", think_time_s=1.0)
    assert [r.arrival_s for r in w.requests if r.turn == 0] == [0.0] * 4
    assert sum(r.think_time_s is not None for r in w.requests) == 8


def test_defaults_documented_in_params() -> None:
    p = SessionsParams()
    assert p.turns == 6 and p.sessions == 32


def test_workload_type() -> None:
    assert isinstance(generate("chat", sessions=1), Workload)
