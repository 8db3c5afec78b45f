"""calc: arithmetic by AST; everything else refused with a CalcError."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kvlab.agents.calc import CalcError, calc


@pytest.mark.parametrize(
    ("expr", "value"),
    [
        ("1 + 2 * 3", 7.0),
        ("(1 + 2) * 3", 9.0),
        ("2 ** 10", 1024.0),
        ("-3 + +4", 1.0),
        ("7 // 2 + 7 % 2", 4.0),
        ("1_000 / 8", 125.0),
        ("sqrt(16) + abs(-2) + max(1, 5) + min(3, 4) + round(2.6)", 17.0),
        ("1506.8 / 2009.8", 1506.8 / 2009.8),
    ],
)
def test_arithmetic(expr: str, value: float) -> None:
    assert calc(expr) == pytest.approx(value)


@pytest.mark.parametrize(
    "expr",
    [
        "__import__('os').system('true')",
        "open('x')",
        "x + 1",
        "(1).real",
        "'a' * 3",
        "1 < 2",
        "True + 1",
        "[1, 2]",
        "lambda: 1",
        "2 ** 1000",
        "1 / 0",
        "",
        "1 +",
        "9" * 600,
        "sqrt(-1)",
    ],
)
def test_refused(expr: str) -> None:
    with pytest.raises(CalcError):
        calc(expr)


def test_no_eval_in_source() -> None:
    import inspect

    import kvlab.agents.calc as mod

    src = inspect.getsource(mod)
    assert "eval(" not in src.replace("_eval(", "")
    assert "exec(" not in src


@given(st.integers(-(10**6), 10**6), st.integers(-(10**6), 10**6))
def test_matches_python_on_integers(a: int, b: int) -> None:
    assert calc(f"{a} + {b} * 3") == a + b * 3
    if b:
        assert calc(f"({a}) / ({b})") == pytest.approx(a / b)


@given(st.text(max_size=40))
def test_any_text_is_a_value_or_a_calc_error(text: str) -> None:
    try:
        v = calc(text)
    except CalcError:
        return
    assert isinstance(v, float)
