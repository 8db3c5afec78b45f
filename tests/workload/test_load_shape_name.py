from __future__ import annotations

from pathlib import Path

import pytest

from kvlab.workload.detect import load_workload
from kvlab.workload.generators import generate


def test_a_shape_name_loads_the_generated_shape() -> None:
    wl = load_workload("agentic", seed=3)
    ref = generate("agentic", seed=3)
    assert [r.to_dict() for r in wl.requests] == [r.to_dict() for r in ref.requests]


def test_an_existing_file_wins_over_a_shape_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kvlab.workload.io import write_workload

    monkeypatch.chdir(tmp_path)
    write_workload(generate("chat", seed=1), tmp_path / "agentic")
    wl = load_workload("agentic")
    assert all(r.cls != "planner" for r in wl.requests)
    assert len(wl.requests) == len(generate("chat", seed=1).requests)
