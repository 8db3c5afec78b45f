"""The matrix format: the shipped default, and file:line errors for bad matrices."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from kvlab.errors import WorkloadError
from kvlab.stress.matrix import default_matrix_text, load_matrix, parse_matrix

GOOD = """\
version: 1
defaults:
  gpu: rtx-4090
slo:
  ttft_p99_s: 1.5
scenarios:
  - name: a
    model: Qwen/Qwen2.5-0.5B
    batch: 4
    seq_len: 512
  - name: b
    model: qwen2.5-7b
    concurrency: 2
    arrival: poisson
    rate_per_s: 0.5
"""


def test_default_matrix_is_the_old_reports_eleven_scenarios() -> None:
    m = load_matrix()
    assert len(m.scenarios) == 11
    assert {s.model for s in m.scenarios} == {"Qwen/Qwen2.5-0.5B", "Qwen/Qwen2.5-7B"}
    assert {s.gpu for s in m.scenarios} == {"rtx-4090"}
    s11 = m.scenarios[10]
    assert (s11.batch, s11.seq_len, s11.concurrency, s11.gen_len) == (512, 32768, 16, 512)
    assert s11.claimed["verdict"] == "FAIL"
    assert "kvlab stress --print-default-matrix" in default_matrix_text()


def test_good_matrix_and_defaults() -> None:
    m = parse_matrix(GOOD, "m.yaml")
    a, b = m.scenarios
    assert (a.batch, a.seq_len, a.gpu, a.concurrency) == (4, 512, "rtx-4090", 1)
    assert (b.arrival, b.rate_per_s) == ("poisson", 0.5)
    assert m.slo.ttft_p99_s == 1.5 and m.slo.tpot_p99_s == 0.1
    assert m.pairs() == [("Qwen/Qwen2.5-0.5B", "rtx-4090"), ("qwen2.5-7b", "rtx-4090")]


def test_json_matrix_reads_the_same(tmp_path: Path) -> None:
    import yaml

    p = tmp_path / "m.json"
    p.write_text(json.dumps(yaml.safe_load(GOOD), indent=2))
    assert load_matrix(p).scenarios == parse_matrix(GOOD).scenarios


@pytest.mark.parametrize(
    ("old", "new", "line", "needle"),
    [
        ("    batch: 4", "    batch: -4", 9, "integer >= 1"),
        ("    batch: 4", "    batch: four", 9, "integer >= 1"),
        ("    seq_len: 512", "    seq_len: 512\n    colour: red", 11, "unknown scenario field"),
        ("    model: qwen2.5-7b", "    model: qwen-9000", 12, "unknown model"),
        ("  gpu: rtx-4090", "  gpu: rtx-9090", 3, "unknown GPU"),
        ("  ttft_p99_s: 1.5", "  ttft_p99_s: -1", 5, "slo.ttft_p99_s"),
        ("    rate_per_s: 0.5", "    rate_per_s: 0", 15, "rate_per_s"),
        ("    arrival: poisson", "    arrival: bursty", 14, "must be one of"),
        ("  - name: b", "  - name: a", 11, "duplicate scenario name"),
        ("    batch: 4", "    batch: [4", 10, "not valid YAML"),
        ("version: 1", "version: 2", 1, "unsupported version"),
        ("slo:", "slos:", 4, "unknown key"),
        ("    batch: 4", "    batch: 4000\n    rounds: 1000", 7, "at most 1,000,000"),
    ],
)
def test_bad_matrix_names_file_and_line(old: str, new: str, line: int, needle: str) -> None:
    assert old in GOOD
    with pytest.raises(WorkloadError) as e:
        parse_matrix(GOOD.replace(old, new, 1), "bad.yaml")
    assert e.value.path == "bad.yaml"
    assert e.value.line == line, str(e.value)
    assert needle in str(e.value)
    assert str(e.value).startswith(f"bad.yaml:{line}: ")
    assert ".[" not in str(e.value)


def test_missing_file_and_empty_file(tmp_path: Path) -> None:
    with pytest.raises(WorkloadError, match="no such file"):
        load_matrix(tmp_path / "nope.yaml")
    (tmp_path / "e.yaml").write_text("")
    with pytest.raises(WorkloadError, match="empty"):
        load_matrix(tmp_path / "e.yaml")


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=200))
def test_any_text_is_a_matrix_or_one_workload_error(text: str) -> None:
    try:
        parse_matrix(text, "fuzz.yaml")
    except WorkloadError as e:
        assert str(e).startswith("fuzz.yaml")


@settings(max_examples=100, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(
            [
                "batch",
                "seq_len",
                "gen_len",
                "concurrency",
                "shared_prefix",
                "arrival",
                "rate_per_s",
                "kv_dtype",
                "max_num_seqs",
                "rounds",
            ]
        ),
        st.one_of(
            st.integers(-5, 10**10),
            st.floats(allow_nan=True),
            st.text(max_size=5),
            st.booleans(),
            st.none(),
        ),
    )
)
@example(fields={"batch": 1, "rate_per_s": ""})  # once crashed float('') at the end
def test_any_scenario_fields_parse_or_fail_cleanly(fields: dict[str, object]) -> None:
    import yaml

    doc = {"scenarios": [{"name": "x", "model": "qwen2.5-0.5b", **fields}]}
    try:
        parse_matrix(yaml.safe_dump(doc), "p.yaml")
    except WorkloadError as e:
        assert e.line is not None
