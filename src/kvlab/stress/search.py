"""The largest integer that passes a test, by galloping then bisection, with its evidence.

:func:`largest_passing` assumes ``passes`` is monotone (true up to some n, false above)
and finds that n in O(log n) calls: it tries 1, 2, 4, ... until a value fails (or
``max_value`` passes), then bisects between the last pass and the first fail. It
does not trust the assumption: after the search it probes ``probes`` values above the
answer (and every value it ever tried is kept), and reports each pass above a fail
as a monotonicity violation. Every call is counted (``num_runs``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class SearchResult:
    """``best``: the largest value found to pass (0 when 1 fails). ``capped``: every
    value up to ``max_value`` passed, so the true limit may lie beyond it.
    ``tried``: value -> passed, for every call, in call order."""

    best: int
    max_value: int
    capped: bool
    num_runs: int
    tried: dict[int, bool] = field(default_factory=dict)
    violations: tuple[str, ...] = ()

    @property
    def monotone(self) -> bool:
        return not self.violations

    def to_dict(self) -> dict[str, object]:
        return {
            "best": self.best,
            "max_value": self.max_value,
            "capped": self.capped,
            "num_runs": self.num_runs,
            "monotone": self.monotone,
            "violations": list(self.violations),
            "tried": {str(k): v for k, v in self.tried.items()},
        }


def largest_passing(
    passes: Callable[[int], bool], max_value: int, *, probes: int = 1
) -> SearchResult:
    """The largest n in [1, max_value] with ``passes(n)`` (see the module docstring)."""
    if max_value < 1:
        raise ValueError(f"max_value must be >= 1, got {max_value}")
    tried: dict[int, bool] = {}

    def test(n: int) -> bool:
        if n not in tried:
            tried[n] = bool(passes(n))
        return tried[n]

    lo, hi = 0, None  # lo passes (0: nothing yet), hi fails
    n = 1
    while True:
        if test(n):
            lo = n
            if n == max_value:
                break
            n = min(2 * n, max_value)
        else:
            hi = n
            break
    if hi is not None:
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if test(mid):
                lo = mid
            else:
                hi = mid
    # probe above the answer: a pass there means the test is not monotone
    step = 1
    for _ in range(probes if hi is not None else 0):
        v = min(lo + 1 + step, max_value)
        if v <= lo + 1:
            break
        test(v)
        step *= 2
    return SearchResult(
        best=lo,
        max_value=max_value,
        capped=hi is None,
        num_runs=len(tried),
        tried=tried,
        violations=_violations(tried),
    )


def _violations(tried: dict[int, bool]) -> tuple[str, ...]:
    """Each value that passed although a smaller one failed."""
    out = []
    fails = sorted(v for v, ok in tried.items() if not ok)
    for v, ok in sorted(tried.items()):
        if ok:
            below = [f for f in fails if f < v]
            if below:
                out.append(f"{v} passes although {below[0]} fails")
    return tuple(out)
