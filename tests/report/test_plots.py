from __future__ import annotations

from pathlib import Path

import pytest

from kvlab.report import plots

pytest.importorskip("matplotlib")


def test_age_labels_pick_a_unit() -> None:
    assert [plots._age(x) for x in (17.59, 0.0011, 5.5e-4, 2e-9)] == [
        "17.6 s",
        "1.1 ms",
        "550 us",
        "2 ns",
    ]


def test_residency_draws_empty_and_age_zero_panels(tmp_path: Path) -> None:
    edges = [0.0] + [2.0**i for i in range(-3, 5)]
    hist = {
        "block_lifetime_s": {"unit": "s", "edges": edges, "counts": [0] * 8},
        "block_reuse_gap_s": {"unit": "s", "edges": edges, "counts": [7, 0, 3, 5, 0, 0, 1, 0]},
    }  # idle-before-evict missing altogether
    paths = plots.residency(hist, "t", tmp_path / "r")
    assert [p.name for p in paths] == ["r.png", "r.svg"]
    svg = paths[1].read_text()
    assert "no evictions" in svg and "7 at age 0" in svg


def test_kv_timeline_of_a_simulated_and_a_measured_run(tmp_path: Path) -> None:
    sim = {
        "t_s": [0.0, 1.0, 2.0],
        "kv_cache_usage_perc": [0.1, 0.3, 0.0],
        "kv_cache_usage_with_cached_perc": [0.1, 0.3, 0.3],
        "num_requests_running": [1.0, 2.0, 0.0],
        "num_requests_waiting": [0.0, 1.0, 0.0],
    }
    real = {"t_s": [0.0, 1.5], "kv_cache_usage_perc": [0.2, 0.1]}
    paths = plots.kv_timeline({"sim": sim, "real": real}, "t", tmp_path / "k")
    svg = paths[1].read_text()
    for label in ("sim: cached free counted as used", "sim: waiting", "real"):
        assert label in svg
