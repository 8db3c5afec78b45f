"""Step time: a roofline from ModelSpec + GPU facts (REFERENCE section 4).

Per engine step, with ``T`` scheduled tokens, ``A`` attention pairs (sum over
sequences of new tokens x context) and ``K`` context tokens whose KV is read::

    compute = (2 * active_params * T + 4 * attn_layers * q_heads * head_dim * A)
              / (mfu * peak_flops)
    memory  = (weight_bytes + kv_bytes_per_token * K) / (mbu * mem_bw)
    step    = overhead + max(compute, memory)

Times are integer ticks (:data:`TICKS_PER_S`), each coefficient rounded once,
so a run of decode steps has an exact closed-form sum (:meth:`window_ticks`)
equal to the step-by-step sum. Uncalibrated: ``label`` says so, and any object
with the same methods (e.g. a table fitted to measurements) can replace it.
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass
from itertools import accumulate, repeat
from typing import Any, Protocol

#: Simulation clock resolution: femtoseconds.
TICKS_PER_S = 10**15


class StepCost(Protocol):
    """What the engine needs of a clock; ``label`` says how it was obtained. A clock
    may also have ``request_delay`` (ticks a request spends outside the engine before
    it joins the queue, e.g. :class:`CalibratedCost`); without it, none."""

    @property
    def label(self) -> str: ...

    def step_ticks(self, num_tokens: int, attn_pairs: int, kv_tokens: int, num_seqs: int) -> int:
        """Ticks of one step of ``num_seqs`` sequences scheduling ``num_tokens`` tokens."""
        ...

    def window_ticks(self, num_seqs: int, context_sum: int, num_steps: int) -> int: ...


def _line_sum(a: int, b: int, i0: int, i1: int) -> int:
    """sum of a + b*i for i in [i0, i1)."""
    n = i1 - i0
    if n <= 0:
        return 0
    return a * n + b * ((i0 + i1 - 1) * n // 2)


def _started_before(ends: list[int], t0: int, deadline: int, extra: int = 0) -> list[int]:
    """``ends`` cut ``extra`` steps after the last step that starts before ``deadline``
    (if > t0); step i starts at ``ends[i - 1]`` (step 0 at t0)."""
    if deadline > t0 and len(ends) > 1 + extra and ends[-2 - extra] >= deadline:
        del ends[bisect_left(ends, deadline, 0, len(ends) - 1 - extra) + 1 + extra :]
    return ends


@dataclass(frozen=True, slots=True)
class RooflineCost:
    """Integer-tick roofline. Coefficients are ticks per unit (see module docstring).

    ``per_token`` compute ticks per scheduled token, ``per_attn`` per attention
    pair, ``weights`` memory ticks per step, ``per_kv_token`` per context token
    read, ``overhead`` fixed ticks per step.
    """

    per_token: int
    per_attn: int
    weights: int
    per_kv_token: int
    overhead: int
    label: str = "roofline, uncalibrated"

    @classmethod
    def from_specs(
        cls,
        *,
        active_params: int,
        attn_layers: int,
        q_heads: int,
        head_dim: int,
        weight_bytes: float,
        kv_bytes_per_token: float,
        peak_flops: float,
        mem_bw_bytes_per_s: float,
        mfu: float = 0.5,
        mbu: float = 0.8,
        overhead_s: float = 0.0003,
    ) -> RooflineCost:
        flops = mfu * peak_flops
        bw = mbu * mem_bw_bytes_per_s
        return cls(
            per_token=round(2 * active_params / flops * TICKS_PER_S),
            per_attn=round(4 * attn_layers * q_heads * head_dim / flops * TICKS_PER_S),
            weights=round(weight_bytes / bw * TICKS_PER_S),
            per_kv_token=round(kv_bytes_per_token / bw * TICKS_PER_S),
            overhead=round(overhead_s * TICKS_PER_S),
        )

    def step_ticks(self, num_tokens: int, attn_pairs: int, kv_tokens: int, num_seqs: int) -> int:
        """The roofline does not depend on ``num_seqs`` (a GPU's batch is its tokens)."""
        compute = self.per_token * num_tokens + self.per_attn * attn_pairs
        memory = self.weights + self.per_kv_token * kv_tokens
        return self.overhead + (compute if compute > memory else memory)

    def step_ends(
        self,
        num_seqs: int,
        context_sum: int,
        num_steps: int,
        t0: int,
        deadline: int = 0,
        hidden: int = 0,
        extra: int = 0,
    ) -> list[int]:
        """``t0 + window_ticks(num_seqs, context_sum, i) - i * hidden`` for i = 1 ..
        num_steps (``hidden``: ticks of each step overlapped by the one before, e.g. the
        host part under async scheduling; at most ``overhead``), stopping before a step
        that would start at or after ``deadline`` (if > t0), or ``extra`` steps after it
        (an async batch is scheduled before the output of the one before is seen)."""
        n, s0 = num_seqs, context_sum
        c = self.per_token * n + self.per_attn * s0
        dc = self.per_attn * n
        m = self.weights + self.per_kv_token * s0
        dm = self.per_kv_token * n
        ov = self.overhead - hidden
        k = num_steps
        first = ov + (c if c > m else m)
        if deadline > t0 and first > 0:  # steps only grow: the first bounds how many start
            bound = -(-(deadline - t0) // first) + extra  # before the deadline
            if bound < k:
                k = bound
        if k <= 0:
            return []
        last_c, last_m = c + dc * (k - 1), m + dm * (k - 1)
        if c <= m and last_c <= last_m:  # memory-bound throughout (ties go to memory)
            a, d = ov + m, dm
        elif c > m and last_c > last_m:  # compute-bound throughout
            a, d = ov + c, dc
        else:  # the bound changes inside the window: step by step
            out = []
            t = t0
            for _ in range(k):
                t += ov + (c if c > m else m)
                out.append(t)
                c += dc
                m += dm
            return _started_before(out, t0, deadline, extra)
        # step i lasts a + d*i ticks: the ends are C-level running sums
        rest = range(a + d, a + d * k, d) if d else repeat(a, k - 1)
        ends = list(accumulate(rest, initial=t0 + a))
        return _started_before(ends, t0, deadline, extra)

    def window_ticks(self, num_seqs: int, context_sum: int, num_steps: int) -> int:
        """Ticks of ``num_steps`` decode steps of ``num_seqs`` sequences whose
        contexts (tokens read, new one included) sum to ``context_sum`` at step 0
        and grow by ``num_seqs`` per step. Equals the sum of :meth:`step_ticks`.
        """
        n, s0 = num_seqs, context_sum
        a1 = self.per_token * n + self.per_attn * s0
        b1 = self.per_attn * n
        a2 = self.weights + self.per_kv_token * s0
        b2 = self.per_kv_token * n
        total = self.overhead * num_steps
        # compute wins at step i iff a1 + b1*i > a2 + b2*i (ties go to memory)
        if b1 == b2:
            return total + _line_sum(a1 if a1 > a2 else a2, b1, 0, num_steps)
        # crossover: first i where the sign of (a1 - a2) + (b1 - b2) * i flips
        da, db = a1 - a2, b1 - b2
        if db > 0:  # compute wins from index c on: da + db*i > 0  <=> i > -da/db
            c = min(max((-da) // db + 1, 0), num_steps)
            return total + _line_sum(a2, b2, 0, c) + _line_sum(a1, b1, c, num_steps)
        # db < 0: compute wins while da + db*i > 0 <=> i < da/(-db)
        c = min(max(-((-da) // (-db)), 0), num_steps) if da > 0 else 0
        return total + _line_sum(a1, b1, 0, c) + _line_sum(a2, b2, c, num_steps)


@dataclass(frozen=True, slots=True)
class CalibratedCost:
    """A linear step cost fitted to measurements (:mod:`kvlab.calibrate.fit`)::

        step = overhead + per_seq * S + per_token * T + per_kv_token * K + per_attn * A

    (``S`` sequences scheduled in the step, ``T`` tokens; a decode is one of each)

    in integer ticks (each coefficient rounded once, so :meth:`window_ticks` equals
    the step-by-step sum). ``label`` names the calibration and its fit error.
    """

    overhead: int
    per_token: int
    per_kv_token: int
    label: str = "calibrated"
    #: ticks a request spends outside the engine's steps before its first token
    #: (the engine lets it join the queue this long after it arrives)
    request_delay: int = 0
    #: ticks per attention pair (a decode's pairs are its context tokens)
    per_attn: int = 0
    #: ticks per sequence scheduled in the step (its own sampling, output and
    #: bookkeeping, whatever its token count)
    per_seq: int = 0

    @classmethod
    def from_calibration(cls, cal: Any, source: str) -> CalibratedCost:
        """The clock of a :class:`kvlab.calibrate.fit.Calibration` read from ``source``."""
        c = cal.coefficients
        return cls(
            overhead=round(c["overhead_s"] * TICKS_PER_S),
            per_token=round(c["per_token_s"] * TICKS_PER_S),
            per_kv_token=round(c["per_kv_byte_s"] * cal.kv_bytes_per_token * TICKS_PER_S),
            label=f"calibrated ({source}, {cal.error_text})",
            request_delay=round(c.get("request_overhead_s", 0.0) * TICKS_PER_S),
            per_attn=round(c.get("per_attn_pair_s", 0.0) * TICKS_PER_S),
            per_seq=round(c.get("per_seq_s", 0.0) * TICKS_PER_S),
        )

    def step_ticks(self, num_tokens: int, attn_pairs: int, kv_tokens: int, num_seqs: int) -> int:
        return (
            self.overhead
            + self.per_seq * num_seqs
            + self.per_token * num_tokens
            + self.per_kv_token * kv_tokens
            + self.per_attn * attn_pairs
        )

    def window_ticks(self, num_seqs: int, context_sum: int, num_steps: int) -> int:
        """Ticks of ``num_steps`` decode steps (see :meth:`RooflineCost.window_ticks`):
        a decode's attention pairs are its context, so both context terms grow by
        ``num_seqs`` a step."""
        n = num_seqs
        per_ctx = self.per_kv_token + self.per_attn
        first = self.overhead + (self.per_token + self.per_seq) * n + per_ctx * context_sum
        return _line_sum(first, per_ctx * n, 0, num_steps)
