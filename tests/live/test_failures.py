"""Error taxonomy on recorded error bodies of vLLM, SGLang, llama.cpp, Ollama."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kvlab.backends.failures import (
    ERROR_KINDS,
    Failure,
    classify_exception,
    classify_status,
    error_message,
)

FIXTURES = Path(__file__).parent / "fixtures"
BODIES = json.loads((FIXTURES / "error_bodies.json").read_text())


@pytest.mark.parametrize("case", BODIES, ids=lambda c: f"{c['server']}-{c['status']}")
def test_recorded_error_bodies_are_classified(case: dict[str, object]) -> None:
    f = classify_status(int(case["status"]), str(case["body"]))  # type: ignore[call-overload]
    assert f.kind == case["kind"]
    assert f.detail.startswith(f"HTTP {case['status']}: ")
    assert len(f.detail) <= 300


def test_error_message_reads_nested_and_flat_shapes() -> None:
    assert error_message('{"error":{"message":"m1"}}') == "m1"
    assert error_message('{"object":"error","message":"m2"}') == "m2"
    assert error_message('{"error":"Unauthorized"}') == "Unauthorized"
    assert error_message("plain text ") == "plain text"


def test_exceptions_map_to_kinds() -> None:
    aiohttp = pytest.importorskip("aiohttp")
    assert classify_exception(TimeoutError()).kind == "timeout"
    assert classify_exception(ConnectionRefusedError()).kind == "connect"
    assert classify_exception(aiohttp.ServerDisconnectedError()).kind == "disconnected"
    assert classify_exception(aiohttp.ClientPayloadError("cut")).kind == "disconnected"
    assert classify_exception(ValueError("bad json")).kind == "protocol"


def test_unknown_kind_is_an_invariant_violation() -> None:
    assert "context_overflow" in ERROR_KINDS
    with pytest.raises(AssertionError):
        Failure("nope", "x")
