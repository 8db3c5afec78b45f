"""``--policy learned:FILE``: a PrefixEviction-v0 policy as the simulator's eviction policy.

A fixed-weight network that always scores candidate 0 highest *is* LRU: its run equals
``--policy lru`` on the per-block pool, request by request. One that prefers the last
candidate changes the hits. A policy trained for a few steps runs through ``simulate``
and ``sweep``'s simulate arguments. A missing file, a foreign zip or a missing ``rl``
extra: one line, exit 2.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

pytest.importorskip("sb3_contrib")

from cli_run import run_cli

K = 4


def _fixed_policy(path: Path, favourite: int) -> Path:
    """A MaskablePPO zip whose action logits are constant, highest at ``favourite``."""
    import torch
    from sb3_contrib import MaskablePPO

    from kvlab.rl.prefix_eviction import PrefixEvictionEnv
    from kvlab.rl.prefix_trace import PrefixTrace
    from kvlab.workload.generators import generate

    trace = PrefixTrace(generate("agentic", seed=0, sessions=4), 16)
    env = PrefixEvictionEnv(trace, 50, k=K, episode_requests=20)
    model = MaskablePPO("MlpPolicy", env, seed=0, n_steps=16, batch_size=16)
    bias = torch.zeros(K)
    bias[favourite] = 5.0
    with torch.no_grad():
        model.policy.action_net.weight.zero_()
        model.policy.action_net.bias.copy_(bias)
    model.save(str(path))
    return path


def _simulate(tmp: Path, name: str, *policy: str) -> tuple[dict, bytes, dict]:
    out = tmp / name
    argv = ["simulate", "agentic", "--num-blocks", "4000", "--policy", *policy]
    r = run_cli([*argv, "--out", str(out), "--json"])
    assert r.code == 0, r.err
    run = json.loads((out / "run.json").read_text())
    return json.loads(r.out), (out / "requests.jsonl").read_bytes(), run["provenance"]


def test_a_policy_that_always_picks_candidate_0_is_lru(tmp_path: Path) -> None:
    lru_zip = _fixed_policy(tmp_path / "lru.zip", 0)
    ref, ref_records, _ = _simulate(tmp_path, "lru", "lru", "--set", "extents=false")
    got, got_records, prov = _simulate(tmp_path, "learned", f"learned:{lru_zip}")
    assert got_records == ref_records
    assert got["prefix_cache_hits"] == ref["prefix_cache_hits"] > 0
    assert prov["kv_pool"] == "block"
    assert "learned" in prov["kv_pool_reason"] and "per-block" in prov["kv_pool_reason"]


def test_a_policy_that_prefers_another_candidate_changes_the_hits(tmp_path: Path) -> None:
    from kvlab.sim.policies import make_policy

    last_zip = _fixed_policy(tmp_path / "last.zip", K - 1)
    ref, _, _ = _simulate(tmp_path, "lru", "lru")
    got, _, _ = _simulate(tmp_path, "learned", f"learned:{last_zip}")
    assert got["prefix_cache_hits"] != ref["prefix_cache_hits"]
    pol = make_policy(f"learned:{last_zip}")
    # the pool's view: four freed blocks, the network takes the last of the 4 candidates
    for b in range(6):
        pol.set_place(b, b, b - 1)
        pol.set_retention(b, 1)
        pol.on_access(b, 100 + b, now=1)
    pol.insert_many([5, 4, 3, 2, 1, 0], now=2)
    assert pol.pop_victims(2, now=3) == [2, 1]  # candidates [5, 4, 3, 2] then [5, 4, 3, 1]
    assert pol.order() == [5, 4, 3, 0]


def test_a_briefly_trained_policy_runs_through_simulate(tmp_path: Path) -> None:
    from kvlab.rl.evaluate import train
    from kvlab.rl.prefix_trace import PrefixTrace
    from kvlab.workload.generators import generate

    trace = PrefixTrace(generate("agentic", seed=1, sessions=4), 16)
    zip_path = train(trace, tmp_path / "ppo.zip", steps=64, requests=20, k=K, seed=0)
    got, _, prov = _simulate(tmp_path, "ppo", f"learned:{zip_path}")
    assert got["num_completed"] == got["num_requests"] > 0
    assert prov["kv_pool"] == "block"


@pytest.mark.parametrize("kind", ["missing", "foreign", "no-extra"])
def test_bad_learned_policy_is_one_line_exit_2(
    tmp_path: Path, kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "p.zip"
    if kind == "foreign":
        path.write_bytes(b"not a zip")
    if kind == "no-extra":
        path.write_bytes(b"x")
        monkeypatch.setitem(sys.modules, "sb3_contrib", None)
    argv = ["simulate", "agentic", "--num-blocks", "4000", "--policy", f"learned:{path}"]
    r = run_cli([*argv, "--out", str(tmp_path / "out")])
    assert r.code == 2 and "Traceback" not in r.err
    lines = [x for x in r.err.splitlines() if x.startswith("error")]
    assert len(lines) == 1
    assert str(path) in lines[0]
    if kind == "no-extra":
        assert "rl extra" in lines[0]
