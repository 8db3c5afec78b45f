"""Executors: the same stress.json from this process and from a 2-worker Dask cluster;
a failing task is retried once, then reported."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from cli_run import run_cli
from kvlab.stress.executor import LocalExecutor, make_executor
from kvlab.stress.matrix import parse_matrix
from kvlab.stress.run import run_stress

MATRIX = """\
version: 1
search: {seq_lens: [1024, 4096], gen_len: 32, max_value: 32, concurrency_rounds: 2}
scenarios:
  - {name: one, model: qwen2.5-0.5b, batch: 4, seq_len: 1024, gen_len: 32}
  - {name: two, model: qwen2.5-7b, batch: 8, seq_len: 2048, gen_len: 64}
  - {name: three, model: qwen2.5-0.5b, batch: 2, seq_len: 32768, gen_len: 8}
"""


def flaky(item: tuple[str, int], cache: Any) -> int:
    """Fails on its first call for an item (a marker file remembers), then succeeds."""
    marker, value = item
    p = Path(marker)
    if value < 0:
        raise ValueError("always fails")
    if not p.exists():
        p.write_text("seen")
        raise RuntimeError("first attempt fails")
    return value * 2


def test_local_executor_retries_once_and_reports(tmp_path: Path) -> None:
    ex = LocalExecutor()
    seen: list[int] = []
    out = ex.map(
        flaky, [(str(tmp_path / "a"), 1), (str(tmp_path / "b"), -1)], lambda o: seen.append(o.index)
    )
    assert [o.value for o in out] == [2, None]
    assert out[0].attempts == 2 and out[0].ok
    assert out[1].attempts == 2 and out[1].error == "ValueError: always fails"
    assert seen == [0, 1]


def test_bad_executor_options() -> None:
    from kvlab.errors import ConfigError

    with pytest.raises(ConfigError):
        make_executor("ray")
    with pytest.raises(ConfigError):
        make_executor("local", "tcp://127.0.0.1:1")


@pytest.fixture(scope="module")
def dask_executor() -> Any:
    pytest.importorskip("distributed")
    import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    ex = make_executor("dask", workers=2)
    yield ex
    ex.close()


def test_dask_gives_the_same_stress_json_byte_for_byte(dask_executor: Any, tmp_path: Path) -> None:
    m = parse_matrix(MATRIX, "m.yaml")
    local = run_stress(m, out=tmp_path / "local")
    dask = run_stress(m, out=tmp_path / "dask", executor=dask_executor)
    assert not local.errors and not dask.errors
    a = (tmp_path / "local" / "stress.json").read_bytes()
    b = (tmp_path / "dask" / "stress.json").read_bytes()
    assert a == b
    assert (tmp_path / "local" / "stress.md").read_bytes() == (
        tmp_path / "dask" / "stress.md"
    ).read_bytes()
    assert len(local.ranges) == 8 and local.presets and local.whatifs


def test_dask_retries_once_and_reports(dask_executor: Any, tmp_path: Path) -> None:
    out = dask_executor.map(flaky, [(str(tmp_path / "a"), 3), (str(tmp_path / "b"), -1)])
    assert out[0].value == 6 and out[0].attempts == 2
    assert out[1].error is not None and "always fails" in out[1].error


def test_cli_executor_option(tmp_path: Path) -> None:
    m = tmp_path / "m.yaml"
    m.write_text(MATRIX)
    r = run_cli(["stress", "-m", str(m), "--out", str(tmp_path / "o"), "--executor", "nope"])
    assert r.code == 2 and "unknown executor" in r.one_line_error()


def test_sweep_on_dask_matches_local(tmp_path: Path) -> None:
    pytest.importorskip("distributed")
    import kvlab

    wl = tmp_path / "w.jsonl"
    kvlab.write_workload(kvlab.generate("chat", seed=3), wl)
    tables = []
    for name in ("local", "dask"):
        out = tmp_path / name
        r = run_cli(
            [
                "sweep",
                str(wl),
                "--modes",
                "baseline,prefix",
                "--sim-args",
                "--num-blocks 300 --model qwen2.5-0.5b --gpu rtx-4090",
                "--no-plots",
                "--out",
                str(out),
                "--executor",
                name,
            ]
        )
        assert r.code == 0, r.err
        tables.append((out / "sweep.json").read_bytes())
    assert tables[0] == tables[1]
