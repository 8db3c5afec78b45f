from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from kvlab.errors import WorkloadError
from kvlab.workload.io import parse_request, read_workload, schema, validate_header, write_workload
from kvlab.workload.records import Request, Segment, Workload

SEG = {"kind": "system", "tokens": 16, "content": "sys", "retention": "system"}
REQ: dict[str, Any] = {"id": "r0", "arrival_s": 0.0, "segments": [SEG], "output_tokens": 4}


def _with(**kw: Any) -> dict[str, Any]:
    d = copy.deepcopy(REQ)
    for k, v in kw.items():
        if v is ...:
            d.pop(k, None)
        else:
            d[k] = v
    return d


def _seg(**kw: Any) -> dict[str, Any]:
    return _with(segments=[{**SEG, **kw}])


VALID: list[dict[str, Any]] = [
    REQ,
    _with(id=7),
    _with(arrival_s=..., think_time_s=1.5, session="s"),
    _with(session=3, turn=2, **{"class": "planner"}, priority=-1),
    _with(output_content="out-1"),
    _seg(retention="ephemeral", kind="tool_output"),
    _with(segments=[{"tokens": 3, "content": "x"}]),
    _with(output_tokens=2.0),
    _seg(tokens=0, content="a") | {"segments": [{**SEG, "tokens": 0}, SEG]},
]

INVALID: list[dict[str, Any]] = [
    _with(id=...),
    _with(id=""),
    _with(id=True),
    _with(segments=[]),
    _with(segments=...),
    _with(output_tokens=0),
    _with(output_tokens=1.5),
    _with(output_tokens=...),
    _with(arrival_s=...),
    _with(arrival_s=-1),
    _with(arrival_s="0"),
    _with(think_time_s=1.0, session="s"),
    _with(arrival_s=..., think_time_s=1.0),
    _with(session=True),
    _with(session=None),
    _with(turn=-1),
    _with(priority=1.5),
    _with(**{"class": 3}),
    _with(output_content=""),
    _with(arival_s=1.0),
    _seg(tokens=-1),
    _seg(content=""),
    _seg(content=...),
    _seg(retention="forever"),
    _seg(kind=5),
    _seg(colour="red"),
]

HEADERS_VALID: list[dict[str, Any]] = [
    {"kvlab_workload": 1},
    {"kvlab_workload": 1, "name": "x", "generator": "chat", "params": {"a": 1}, "seed": 3},
    {"kvlab_workload": 1, "generator": None, "seed": None},
]
HEADERS_INVALID: list[dict[str, Any]] = [
    {"kvlab_workload": 2},
    {"kvlab_workload": 1, "seed": "3"},
    {"kvlab_workload": 1, "params": []},
    {"kvlab_workload": 1, "extra": 1},
]


def _ours_accepts(obj: dict[str, Any]) -> bool:
    try:
        if "kvlab_workload" in obj:
            validate_header(obj)
        else:
            parse_request(obj)
    except WorkloadError:
        return False
    return True


@pytest.mark.parametrize("obj", VALID + HEADERS_VALID + INVALID + HEADERS_INVALID)
def test_schema_and_validator_agree(obj: dict[str, Any]) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    # _seg(content=...) leaves an Ellipsis in the segment: drop it for both.
    obj = json.loads(json.dumps(obj, default=lambda _: None))
    for s in obj.get("segments") or []:
        for k in [k for k, v in s.items() if v is None]:
            del s[k]
    v = jsonschema.Draft202012Validator(schema())
    schema_ok = not list(v.iter_errors(obj))
    expected = any(obj == json.loads(json.dumps(x, default=lambda _: None)) for x in VALID)
    expected |= obj in HEADERS_VALID
    assert schema_ok == expected
    assert _ours_accepts(obj) == expected


def test_schema_is_a_valid_schema() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.Draft202012Validator.check_schema(schema())


def _write(tmp_path: Path, lines: list[Any], name: str = "w.jsonl") -> Path:
    p = tmp_path / name
    p.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines))
    return p


def test_round_trip(tmp_path: Path) -> None:
    reqs = (
        Request("a", (Segment("system", 10, "sys", "system"),), 5, arrival_s=0.0, session_id="s"),
        Request(
            "b",
            (Segment("system", 10, "sys", "system"), Segment("user", 3, "u", "context")),
            7,
            arrival_s=None,
            think_time_s=2.0,
            session_id="s",
            turn=1,
            cls="chat",
            priority=2,
            output_content_id="o",
        ),
    )
    w = Workload(reqs, name="demo", meta={"generator": "chat", "params": {"x": 1}, "seed": 4})
    for name in ("w.jsonl", "w.jsonl.gz"):
        p = write_workload(w, tmp_path / name)
        back = read_workload(p)
        assert back.requests == reqs
        assert back.name == "demo"
        assert back.meta == {"generator": "chat", "params": {"x": 1}, "seed": 4}
    assert not [f for f in tmp_path.iterdir() if f.name.startswith(".")]


def test_error_names_file_line_field(tmp_path: Path) -> None:
    p = _write(tmp_path, [{"kvlab_workload": 1}, REQ, "", _seg(retention="forever") | {"id": "r1"}])
    with pytest.raises(WorkloadError) as ei:
        read_workload(p)
    e = ei.value
    assert (e.path, e.line, e.field) == (str(p), 4, "segments[0].retention")
    assert str(e).startswith(f"{p}:4: field 'segments[0].retention': unknown retention class")


def test_invalid_json_line(tmp_path: Path) -> None:
    p = _write(tmp_path, [REQ, "{not json"])
    with pytest.raises(WorkloadError, match=r":2: invalid JSON"):
        read_workload(p)


def test_header_must_be_first(tmp_path: Path) -> None:
    p = _write(tmp_path, [REQ, {"kvlab_workload": 1}])
    with pytest.raises(WorkloadError, match="header must be the first line"):
        read_workload(p)


def test_empty_workload(tmp_path: Path) -> None:
    p = _write(tmp_path, [{"kvlab_workload": 1, "name": "e"}, "# comment"])
    with pytest.raises(WorkloadError, match="no requests"):
        read_workload(p)
    assert len(read_workload(p, allow_empty=True)) == 0


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(WorkloadError, match="no such file"):
        read_workload(tmp_path / "nope.jsonl")


def test_unsorted_is_an_error_or_sorted(tmp_path: Path) -> None:
    lines = [
        _with(id="a", arrival_s=5.0, session="s"),
        _with(id="b", arrival_s=..., think_time_s=1.0, session="s", turn=1),
        _with(id="c", arrival_s=2.0),
        _with(id="d", arrival_s=5.0),
    ]
    p = _write(tmp_path, lines)
    with pytest.raises(WorkloadError) as ei:
        read_workload(p)
    assert (ei.value.line, ei.value.field) == (3, "arrival_s")
    w = read_workload(p, sort=True)
    assert [r.request_id for r in w.requests] == ["c", "a", "b", "d"]


def test_duplicate_ids_and_session_rules(tmp_path: Path) -> None:
    p = _write(tmp_path, [REQ, REQ])
    with pytest.raises(WorkloadError, match="duplicate request id") as ei:
        read_workload(p)
    assert ei.value.line == 2
    p = _write(tmp_path, [_with(arrival_s=..., think_time_s=1.0, session="s")])
    with pytest.raises(WorkloadError, match="first request of a session"):
        read_workload(p)
    p = _write(
        tmp_path,
        [_with(id="a", session="s", turn=1), _with(id="b", session="s", turn=1, arrival_s=1)],
    )
    with pytest.raises(WorkloadError, match="must increase"):
        read_workload(p)


def test_zero_token_prompt_rejected(tmp_path: Path) -> None:
    p = _write(tmp_path, [_seg(tokens=0)])
    with pytest.raises(WorkloadError, match="at least one token"):
        read_workload(p)
