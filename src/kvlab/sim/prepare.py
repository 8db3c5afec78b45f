"""A workload made ready for the engine, once for every run on it.

What the engine needs of a workload that depends on the workload and the block
size only: its times checked, the arrivals known up front in order (ticks),
each session's next turn, every request's block keys (:mod:`kvlab.sim.names`),
and the blocks each request needs at most. A sweep, a stress search or
reinforcement-learning episodes run one workload many times:
:func:`prepare` it once and pass the result to :func:`kvlab.sim.engine.simulate`
(a plain :class:`~kvlab.workload.records.Workload` is prepared by each call).
Nothing here changes during a run; runs on one prepared workload are independent.
"""

from __future__ import annotations

import math

from kvlab.errors import CapacityError, ConfigError, WorkloadError
from kvlab.sim.cost_model import TICKS_PER_S
from kvlab.sim.names import KeyNames, KeyNameTable
from kvlab.workload.records import Request, Workload

#: A block index no request reaches.
NEVER = 1 << 62

#: What a run's request (:class:`kvlab.sim.sequence.Seq`) takes from the workload,
#: the same in every run: (request, block size, prompt tokens, full prompt blocks,
#: where each prompt key run ends then NEVER, the first key of each run then the
#: output's, output base key, (key, tokens) stretches, output content id). Never mutated.
SeqStatic = tuple[
    Request,
    int,
    int,
    int,
    tuple[int, ...],
    tuple[int, ...],
    int,
    tuple[tuple[int, int], ...],
    "str | None",
]

#: Latest arrival or longest think time accepted (ages stay far below 2**255 ticks).
MAX_TIME_S = 1e30


def ticks(x: float) -> int:
    """Seconds to simulation ticks."""
    return round(x * TICKS_PER_S)


class PreparedWorkload:
    """``workload`` ready for runs with blocks of ``block_size`` tokens.

    Invariants: ``arrival_ticks`` / ``arrival_index`` are the open-loop arrivals
    (requests with ``arrival_s``) as (tick, request index), sorted; ``next_in_session[i]``
    is the index of the turn that follows request i in its session (it arrives
    its think time after request i ends); names are made on first use (every request
    at once, :mod:`kvlab.sim.names`) and kept.
    """

    def __init__(self, workload: Workload, block_size: int, keep: bool = True) -> None:
        """``keep``: keep each request's :data:`SeqStatic` once made, for later runs
        (some 300 bytes a request; a single run, :func:`kvlab.sim.engine.simulate` on
        a plain workload, passes False)."""
        if block_size < 1:
            raise ValueError(f"block_size must be >= 1, got {block_size}")
        self.workload = workload
        self.block_size = block_size
        requests = workload.requests
        arrival = [q.arrival_s for q in requests]
        times_ok = _times_ok(arrival) and _times_ok([q.think_time_s for q in requests])
        self.next_in_session: dict[int, int] = {}
        if times_ok and None not in arrival:  # every request arrives on its own
            t = [round(x * TICKS_PER_S) for x in arrival]  # type: ignore[operator]
            #: sorted by (tick, request index), as the general loop's tuples sort
            self.arrival_index: list[int] = sorted(range(len(t)), key=t.__getitem__)
            self.arrival_ticks: list[int] = [t[i] for i in self.arrival_index]
        else:
            self._arrivals_and_sessions(requests, check=not times_ok)
        self.names = KeyNameTable(requests, block_size)
        self._need: dict[int, int] = {}
        self._static: list[SeqStatic | None] | None = [None] * len(requests) if keep else None

    def _arrivals_and_sessions(self, requests: tuple[Request, ...], check: bool) -> None:
        """:attr:`arrival_ticks`, :attr:`arrival_index` and :attr:`next_in_session`
        request by request, raising the first error in request order (with ``check``,
        of the times too)."""
        last_of_session: dict[str, int] = {}
        arrivals: list[tuple[int, int]] = []
        for i, q in enumerate(requests):
            if check:
                _check_times(q, i)
            if q.arrival_s is not None:
                arrivals.append((ticks(q.arrival_s), i))
            elif q.session_id in last_of_session:
                self.next_in_session[last_of_session[q.session_id]] = i
            else:
                raise WorkloadError(
                    "the first request of a session needs arrival_s", field=f"requests[{i}]"
                )
            if q.session_id is not None:
                last_of_session[q.session_id] = i
        arrivals.sort()
        self.arrival_ticks = [t for t, _ in arrivals]
        self.arrival_index = [i for _, i in arrivals]

    def key_names(self, i: int) -> KeyNames:
        """Request ``i``'s block key names (see :mod:`kvlab.sim.names`)."""
        return self.names.get(i)

    def seq_static(self, i: int) -> SeqStatic:
        """Request ``i``'s :data:`SeqStatic` (made from its key names, kept with ``keep``)."""
        kept = self._static
        if kept is not None:
            static = kept[i]
            if static is not None:
                return static
        q = self.workload.requests[i]
        firsts, ends, runs, _, zero = self.names.get(i)
        p, bs = q.prompt_tokens, self.block_size
        nprompt = ends[-1] if ends else 0
        base = zero - p  # output block j's key is base + (j + 1) * bs
        # tuples of ints: the garbage collector stops tracking them
        static = (
            q,
            bs,
            p,
            nprompt,
            (*ends, NEVER),
            (*firsts, base + (nprompt + 1) * bs),
            base,
            tuple(runs),
            q.output_content_id,
        )
        if kept is not None:
            kept[i] = static
        return static

    def check_capacity(self, max_model_len: int, num_blocks: int) -> None:
        """CapacityError naming the first request that could never fit in a cache of
        ``num_blocks`` (the null block included), even alone."""
        requests = self.workload.requests
        most = self._need.get(max_model_len)
        if not requests:
            return
        if most is None:
            need = _blocks_needed(requests, max_model_len, self.block_size)
            most = self._need[max_model_len] = max(need)
        usable = num_blocks - 1
        if most <= usable:
            return
        bs = self.block_size
        need = _blocks_needed(requests, max_model_len, bs)
        i = next(i for i, n in enumerate(need) if n > usable)
        q = self.workload.requests[i]
        raise CapacityError(
            f"request {q.request_id!r} needs {q.prompt_tokens + q.output_tokens} tokens of KV "
            f"but the cache holds {usable * bs} ({usable} blocks of {bs}); "
            "give more --num-blocks or GPU memory, or shorten the request"
        )


def prepare(
    workload: Workload | PreparedWorkload, block_size: int, keep: bool = True
) -> PreparedWorkload:
    """``workload`` prepared for ``block_size`` (a prepared one is checked and returned;
    ``keep``: see :class:`PreparedWorkload`)."""
    if isinstance(workload, PreparedWorkload):
        if workload.block_size != block_size:
            raise ConfigError(
                f"the workload was prepared for blocks of {workload.block_size} tokens, "
                f"the run uses {block_size}: prepare it again"
            )
        return workload
    return PreparedWorkload(workload, block_size, keep)


def _blocks_needed(requests: tuple[Request, ...], max_model_len: int, bs: int) -> list[int]:
    """Blocks each request holds at its peak (0 for prompts vLLM rejects outright:
    ``prompt_tokens >= max_model_len``); the last sampled token has no KV."""
    m = max_model_len
    out = []
    for q in requests:
        p = q.prompt_tokens
        out.append(-(-(p + min(q.output_tokens, m - p) - 1) // bs) if p < m else 0)
    return out


def _times_ok(values: list[float | None]) -> bool:
    """Whether every time given is finite, >= 0 and <= MAX_TIME_S (as :func:`_check_times`
    asks of each); False also for a value that is no number."""
    present = [v for v in values if v is not None]
    if not present:
        return True
    try:
        return all(map(math.isfinite, present)) and 0 <= min(present) <= max(present) <= MAX_TIME_S
    except TypeError:
        return False


def _check_times(q: Request, i: int) -> None:
    for name in ("arrival_s", "think_time_s"):
        v = getattr(q, name)
        if v is not None and (not math.isfinite(v) or v < 0 or v > MAX_TIME_S):
            raise WorkloadError(
                f"must be finite, >= 0 and <= {MAX_TIME_S:g} s, got {v!r}",
                field=f"requests[{i}].{name}",
            )
