"""``calc``: arithmetic on numbers, evaluated by walking the AST (no ``eval`` anywhere).

Accepted: int and float literals (``1_000``, ``2.5e3``), ``+ - * / // % **``, unary
``+ -``, parentheses, and the functions of :data:`FUNCTIONS`. Anything else (names,
attributes, calls of other functions, strings, comparisons) is a :class:`CalcError`
naming what was refused. Exponents are bounded (``|exponent| <= MAX_EXPONENT``) and the
expression length by ``MAX_CHARS`` so a call cannot hang the process.
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable

from kvlab.errors import ConfigError

#: Longest expression accepted, in characters.
MAX_CHARS = 500
#: Largest exponent magnitude accepted by ``**``.
MAX_EXPONENT = 100

_BINARY: dict[type, Callable[[float, float], float]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY: dict[type, Callable[[float], float]] = {ast.UAdd: operator.pos, ast.USub: operator.neg}

#: Functions ``calc`` knows, by name.
FUNCTIONS: dict[str, Callable[..., float]] = {
    "abs": abs,
    "round": round,
    "min": min,
    "max": max,
    "sqrt": math.sqrt,
}


class CalcError(ConfigError):
    """An expression ``calc`` refuses or cannot evaluate."""


def calc(expression: str) -> float:
    """The value of ``expression`` (see the module docstring for what is accepted)."""
    if not isinstance(expression, str) or not expression.strip():
        raise CalcError("calc: the expression must be a non-empty string")
    if len(expression) > MAX_CHARS:
        raise CalcError(f"calc: the expression is longer than {MAX_CHARS} characters")
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except SyntaxError as e:
        raise CalcError(f"calc: not an arithmetic expression: {expression!r} ({e.msg})") from None
    try:
        value = _eval(tree.body)
    except (ZeroDivisionError, OverflowError, ValueError, TypeError) as e:
        raise CalcError(f"calc: {expression!r}: {e}") from None
    if isinstance(value, complex) or not math.isfinite(value):
        raise CalcError(f"calc: {expression!r} has no finite real value")
    return float(value)


def _eval(node: ast.AST) -> float:
    if isinstance(node, ast.Constant):
        if isinstance(node.value, bool) or not isinstance(node.value, int | float):
            raise CalcError(f"calc: only numbers are allowed, got {node.value!r}")
        return node.value
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _eval(node.left), _eval(node.right)
        if isinstance(node.op, ast.Pow) and abs(right) > MAX_EXPONENT:
            raise CalcError(f"calc: exponent {right} is above {MAX_EXPONENT}")
        return _BINARY[type(node.op)](left, right)
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_eval(node.operand))
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and not node.keywords:
        fn = FUNCTIONS.get(node.func.id)
        if fn is None:
            raise CalcError(f"calc: unknown function {node.func.id!r}")
        return float(fn(*(_eval(a) for a in node.args)))
    raise CalcError(f"calc: {type(node).__name__} is not allowed")
