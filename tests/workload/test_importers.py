"""Trace importers: Mooncake JSONL, Azure 2023 CSV, Vidur CSV, format detection."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kvlab.errors import ConfigError, WorkloadError
from kvlab.workload.detect import (
    BUILTIN_TRACES,
    builtin_trace,
    detect_format,
    load_workload,
)
from kvlab.workload.importers import read_azure, read_mooncake, read_vidur


def _write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def _mooncake(tmp_path: Path, rows: list[dict[str, object]]) -> Path:
    return _write(tmp_path, "m.jsonl", "".join(json.dumps(r) + "\n" for r in rows))


# --------------------------------------------------------------------------- Mooncake


def test_mooncake_segments_one_per_hash_id_last_partial(tmp_path: Path) -> None:
    p = _mooncake(
        tmp_path,
        [
            {"timestamp": 0, "input_length": 1100, "output_length": 7, "hash_ids": [0, 1, 2]},
            {"timestamp": 2500, "input_length": 1024, "output_length": 3, "hash_ids": [0, 1]},
        ],
    )
    wl = read_mooncake(p)
    a, b = wl.requests
    assert [(s.content_id, s.tokens) for s in a.segments] == [
        ("mooncake:0", 512),
        ("mooncake:1", 512),
        ("mooncake:2", 76),
    ]
    assert a.prompt_tokens == 1100 and a.output_tokens == 7 and a.arrival_s == 0.0
    assert [(s.content_id, s.tokens) for s in b.segments] == [
        ("mooncake:0", 512),
        ("mooncake:1", 512),
    ]
    assert b.arrival_s == 2.5
    assert (a.request_id, b.request_id) == ("0", "1")
    assert a.segments[0] == b.segments[0]
    assert wl.meta["source_format"] == "mooncake"


def test_mooncake_zero_output_clamped_zero_input_skipped(tmp_path: Path) -> None:
    p = _mooncake(
        tmp_path,
        [
            {"timestamp": 0, "input_length": 0, "output_length": 5, "hash_ids": []},
            {"timestamp": 1, "input_length": 10, "output_length": 0, "hash_ids": [4]},
        ],
    )
    wl = read_mooncake(p)
    assert len(wl) == 1
    (r,) = wl.requests
    assert r.request_id == "1" and r.output_tokens == 1
    assert wl.meta["num_skipped_empty_prompt"] == 1
    assert wl.meta["num_output_clamped"] == 1


def test_mooncake_sorted_stably_by_arrival(tmp_path: Path) -> None:
    rows = [
        {"timestamp": t, "input_length": 5, "output_length": 1, "hash_ids": [i]}
        for i, t in enumerate([30, 10, 30, 10])
    ]
    wl = read_mooncake(_mooncake(tmp_path, rows))
    assert [r.request_id for r in wl.requests] == ["1", "3", "0", "2"]


_GOOD = {"timestamp": 0, "input_length": 5, "output_length": 1, "hash_ids": [0]}


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"timestamp": -1}, "timestamp"),
        ({"timestamp": "x"}, "timestamp"),
        ({"timestamp": True}, "timestamp"),
        ({"input_length": -5}, "input_length"),
        ({"input_length": 5.5}, "input_length"),
        ({"output_length": None}, "output_length"),
        ({"input_length": 600}, "hash_ids"),
        ({"hash_ids": ["a"]}, "hash_ids"),
        ({"hash_ids": [[1]]}, "hash_ids"),
        ({"hash_ids": None}, "hash_ids"),
    ],
)
def test_mooncake_malformed_field_names_file_line_field(
    tmp_path: Path, change: dict[str, object], field: str
) -> None:
    p = _mooncake(tmp_path, [_GOOD, {**_GOOD, **change}])
    with pytest.raises(WorkloadError) as ei:
        read_mooncake(p)
    assert ei.value.line == 2 and ei.value.field == field
    assert str(p) in str(ei.value)


def test_mooncake_nan_timestamp_and_bad_json(tmp_path: Path) -> None:
    p = _write(
        tmp_path,
        "nan.jsonl",
        '{"timestamp": NaN, "input_length": 5, "output_length": 1, "hash_ids": [0]}\n',
    )
    with pytest.raises(WorkloadError, match="finite") as ei:
        read_mooncake(p)
    assert ei.value.line == 1
    p = _write(tmp_path, "bad.jsonl", '{"timestamp": 0}\n\n{"timestamp": \n')
    with pytest.raises(WorkloadError, match="invalid JSON") as ei:
        read_mooncake(p)
    assert ei.value.line == 3


# --------------------------------------------------------------------------- Azure

AZURE = """TIMESTAMP,ContextTokens,GeneratedTokens
2023-11-16 18:15:46.6805900,374,44
2023-11-16 18:15:50.9951690,396,109
2023-11-16 18:15:50.9951690,12,0
"""


def test_azure_arrivals_relative_to_first_timestamp(tmp_path: Path) -> None:
    wl = read_azure(_write(tmp_path, "conv.csv", AZURE))
    a, b, c = wl.requests
    assert a.arrival_s == 0.0
    assert b.arrival_s == pytest.approx(4.314579)
    assert c.arrival_s == b.arrival_s and c.output_tokens == 1
    assert [r.prompt_tokens for r in wl.requests] == [374, 396, 12]
    assert [s.content_id for r in wl.requests for s in r.segments] == [
        "azure:conv:0",
        "azure:conv:1",
        "azure:conv:2",
    ]
    assert wl.meta["num_output_clamped"] == 1


@pytest.mark.parametrize(
    ("line", "field"),
    [
        ("yesterday,374,44", "TIMESTAMP"),
        ("2023-11-16 18:15:46.68,-3,44", "ContextTokens"),
        ("2023-11-16 18:15:46.68,3,4.5", "GeneratedTokens"),
        ("2023-11-16 18:15:46.68,3,nan", "GeneratedTokens"),
        ("2023-11-16 18:15:46.68,3", None),
    ],
)
def test_azure_malformed(tmp_path: Path, line: str, field: str | None) -> None:
    p = _write(tmp_path, "a.csv", AZURE + line + "\n")
    with pytest.raises(WorkloadError) as ei:
        read_azure(p)
    assert ei.value.line == 5 and ei.value.field == field


def test_azure_header_must_name_columns(tmp_path: Path) -> None:
    with pytest.raises(WorkloadError, match="GeneratedTokens"):
        read_azure(_write(tmp_path, "a.csv", "TIMESTAMP,ContextTokens\n"))


# --------------------------------------------------------------------------- Vidur

VIDUR = """num_prefill_tokens,num_decode_tokens,num_total_tokens,pd_ratio
3772,54,3826,69.8
2015,156,2171,12.9
0,5,5,0.0
"""


def test_vidur_without_rate_all_arrive_at_zero(tmp_path: Path) -> None:
    wl = read_vidur(_write(tmp_path, "v.csv", VIDUR))
    assert [(r.prompt_tokens, r.output_tokens, r.arrival_s) for r in wl.requests] == [
        (3772, 54, 0.0),
        (2015, 156, 0.0),
    ]
    assert wl.meta["num_skipped_empty_prompt"] == 1


def test_vidur_poisson_arrivals_seeded(tmp_path: Path) -> None:
    p = _write(tmp_path, "v.csv", VIDUR)
    a = read_vidur(p, rate_per_s=2.0, seed=7)
    b = read_vidur(p, rate_per_s=2.0, seed=7)
    c = read_vidur(p, rate_per_s=2.0, seed=8)
    times = [r.arrival_s for r in a.requests]
    assert times == [r.arrival_s for r in b.requests]
    assert times != [r.arrival_s for r in c.requests]
    assert 0 < times[0] < times[1]
    with pytest.raises(ConfigError):
        read_vidur(p, rate_per_s=0.0)


def test_vidur_poisson_mean_gap() -> None:
    wl = read_vidur(builtin_trace("vidur-arxiv"), rate_per_s=4.0, seed=1)
    last = wl.requests[-1].arrival_s
    assert last is not None
    assert len(wl) / last == pytest.approx(4.0, rel=0.03)


# --------------------------------------------------------------------------- property tests

_rows = st.lists(
    st.tuples(
        st.integers(0, 10**7),  # timestamp ms
        st.integers(1, 3000),  # input length
        st.integers(0, 50),  # output length
        st.integers(0, 5),  # id pool offset
    ),
    min_size=1,
    max_size=20,
)


@settings(max_examples=60, deadline=None)
@given(_rows)
def test_mooncake_property_tokens_and_order(rows: list[tuple[int, int, int, int]]) -> None:
    import tempfile

    data = []
    for ts, n_in, n_out, off in rows:
        n_ids = -(-n_in // 512)
        data.append(
            {
                "timestamp": ts,
                "input_length": n_in,
                "output_length": n_out,
                "hash_ids": list(range(off, off + n_ids)),
            }
        )
    with tempfile.TemporaryDirectory() as d:
        wl = read_mooncake(_mooncake(Path(d), data))
    assert len(wl) == len(rows)
    arrivals = [r.arrival_s for r in wl.requests]
    assert arrivals == sorted(arrivals)  # type: ignore[type-var]
    for r in wl.requests:
        src = data[int(r.request_id)]
        assert r.prompt_tokens == src["input_length"]
        assert r.output_tokens == max(1, src["output_length"])  # type: ignore[call-overload]
        assert r.arrival_s == src["timestamp"] / 1000  # type: ignore[operator]
        assert all(s.tokens == 512 for s in r.segments[:-1])
        assert 1 <= r.segments[-1].tokens <= 512


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 86_399_999_999), st.integers(0, 9999)), min_size=1))
def test_azure_property_arrival_offsets(rows: list[tuple[int, int]]) -> None:
    import tempfile
    from datetime import datetime, timedelta

    base = datetime(2023, 11, 16)
    lines = ["TIMESTAMP,ContextTokens,GeneratedTokens"]
    for us, n in rows:
        t = base + timedelta(microseconds=us)
        lines.append(f"{t.strftime('%Y-%m-%d %H:%M:%S.%f')}0,{n + 1},{n}")
    with tempfile.TemporaryDirectory() as d:
        wl = read_azure(_write(Path(d), "a.csv", "\n".join(lines) + "\n"))
    first = min(us for us, _ in rows)
    for r in wl.requests:
        us, n = rows[int(r.request_id)]
        assert r.arrival_s == pytest.approx((us - first) / 1e6, abs=1e-9)
        assert r.prompt_tokens == n + 1 and r.output_tokens == max(1, n)


# --------------------------------------------------------------------------- detection


@pytest.mark.parametrize(
    ("name", "fmt", "rows"),
    [
        ("mooncake-conversation", "mooncake", 12_031),
        ("mooncake-synthetic", "mooncake", 3_993),
        ("azure-conv", "azure", 19_366),
        ("azure-code", "azure", 8_819),
        ("vidur-arxiv", "vidur", 28_257),
    ],
)
def test_builtin_traces_detect_and_load(name: str, fmt: str, rows: int) -> None:
    p = builtin_trace(name)
    assert p.is_file()
    assert detect_format(p) == fmt
    wl = load_workload(p)
    assert len(wl) == rows
    assert wl.meta["source_format"] == fmt


def test_builtin_trace_statistics_match_published_means() -> None:
    wl = load_workload("mooncake-conversation")
    n = len(wl)
    assert sum(r.prompt_tokens for r in wl.requests) / n == pytest.approx(12_035, abs=1)
    assert sum(r.output_tokens for r in wl.requests) / n == pytest.approx(343, abs=1)
    # every request starts with the same (system prompt) block
    assert {r.segments[0].content_id for r in wl.requests} == {"mooncake:0"}
    az = load_workload("azure-conv")
    assert sum(r.prompt_tokens for r in az.requests) / len(az) == pytest.approx(1155, abs=1)


def test_builtin_trace_unknown_name() -> None:
    with pytest.raises(ConfigError, match="azure-conv"):
        builtin_trace("nope")
    assert set(BUILTIN_TRACES) >= {"azure-conv", "mooncake-conversation"}


def test_traces_ship_with_licences(repo_root: Path) -> None:
    d = repo_root / "src" / "kvlab" / "data" / "traces"
    names = {p.name for p in d.iterdir()}
    assert {f for f in BUILTIN_TRACES.values()} <= names
    assert {"README.md", "LICENSE-mooncake-Apache-2.0.txt", "LICENSE-vidur-MIT.txt"} <= names
    assert "LICENSE-azure2023-CC-BY-4.0.txt" in names
    assert "Splitwise" in (d / "README.md").read_text()


def test_detect_format_from_content(tmp_path: Path) -> None:
    assert detect_format(_write(tmp_path, "x.txt", '\n{"id": "a", "segments": []}\n')) == "kvlab"
    assert detect_format(_write(tmp_path, "h.jsonl", '{"kvlab_workload": 1}\n')) == "kvlab"
    assert detect_format(_write(tmp_path, "m", '{"hash_ids": [1]}\n')) == "mooncake"
    assert detect_format(_write(tmp_path, "a", "TIMESTAMP,ContextTokens,GeneratedTokens\n")) == (
        "azure"
    )
    assert detect_format(_write(tmp_path, "v", "num_prefill_tokens,num_decode_tokens\n")) == (
        "vidur"
    )
    with pytest.raises(WorkloadError, match="format"):
        detect_format(_write(tmp_path, "u", "a,b,c\n"))
    with pytest.raises(WorkloadError, match="empty"):
        detect_format(_write(tmp_path, "e", "\n\n"))
    with pytest.raises(WorkloadError, match="no such file"):
        detect_format(tmp_path / "missing")


def test_load_workload_unknown_format_lists_choices(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="kvlab, mooncake, azure, vidur"):
        load_workload(tmp_path / "x", fmt="sharegpt")


def test_load_workload_explicit_format_and_rate(tmp_path: Path) -> None:
    p = _write(tmp_path, "v.csv", VIDUR)
    wl = load_workload(p, fmt="vidur", rate_per_s=1.0, seed=3)
    assert all(r.arrival_s and r.arrival_s > 0 for r in wl.requests)


def test_kvlab_workload_files_load_through_detection(tmp_path: Path) -> None:
    from kvlab.workload.io import write_workload
    from kvlab.workload.records import Request, Segment, Workload

    wl = Workload(
        requests=(
            Request("a", (Segment("system", 16, "sys"),), 4, arrival_s=0.0),
            Request("b", (Segment("system", 16, "sys"), Segment("user", 3, "u")), 2, arrival_s=1.0),
        ),
        name="tiny",
    )
    p = write_workload(wl, tmp_path / "w.jsonl")
    assert detect_format(p) == "kvlab"
    back = load_workload(p)
    assert back.requests == wl.requests


def test_gzip_and_comment_lines(tmp_path: Path) -> None:
    import gzip

    p = tmp_path / "m.jsonl.gz"
    row = {"timestamp": 7, "input_length": 600, "output_length": 2, "hash_ids": [3, 4]}
    with gzip.open(p, "wt", encoding="utf-8") as f:
        f.write(json.dumps(row) + "\n")
    assert detect_format(p) == "mooncake"
    (r,) = load_workload(p).requests
    assert r.prompt_tokens == 600 and r.arrival_s == 0.007
    c = _write(tmp_path, "c.jsonl", '# a comment\n\n{"kvlab_workload": 1}\n')
    assert detect_format(c) == "kvlab"
