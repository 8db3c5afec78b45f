"""Seq: the simulator's running state of one request."""

from __future__ import annotations

import bisect

from kvlab.results import RequestRecord
from kvlab.sim.prepare import SeqStatic
from kvlab.workload.records import RETENTION_CLASSES

RANK = {name: i for i, name in enumerate(RETENTION_CLASSES)}
GENERATION_RANK = RANK["generation"]

WAITING, RUNNING, FINISHED = 0, 1, 2


class Seq:
    """One request inside the engine.

    ``num_tokens`` = prompt + generated tokens; ``num_computed`` tokens have KV.
    A running request decodes when ``num_computed == num_tokens - 1``.
    Block keys come in runs: ``pkey[p]`` is the first key of run p (keys step by
    the block size), ``ends[p]`` the block index where it ends (the output's run,
    last, never does); ``key_at(i)`` is block i's key, ``keys`` all known keys as
    one list (built on first use). ``nblocks`` (blocks held) and
    ``num_cached_blocks`` (leading blocks cached) are kept by the KV cache.

    This class holds the request's own state only. What a KV cache keeps per
    request (its block table) is in the KV cache's subclass
    (:class:`kvlab.sim.kv_manager.BlockSeq`, :class:`kvlab.sim.extents.ExtentSeq`),
    what the decode cohort keeps in :class:`kvlab.sim.cohort.CohortSeq`.
    """

    __slots__ = (
        "_keys",
        "arrival",
        "block_size",
        "ends",
        "idx",
        "max_out",
        "nblocks",
        "nknown",
        "nprompt",
        "num_cached_blocks",
        "num_computed",
        "num_out",
        "num_tokens",
        "out_base",
        "out_content",
        "pkey",
        "prompt_len",
        "rec",
        "req",
        "run_seq",
        "seg_ends",
        "seg_ranks",
        "seg_runs",
        "status",
    )

    def __init__(
        self, idx: int, static: SeqStatic, arrival: int, max_model_len: int, rec: RequestRecord
    ) -> None:
        """Request ``idx`` arriving at tick ``arrival``; ``static`` is what every run
        takes from the workload (:meth:`kvlab.sim.prepare.PreparedWorkload.seq_static`:
        shared between runs, never mutated)."""
        (
            self.req,
            self.block_size,
            self.prompt_len,
            self.nprompt,  # full prompt blocks
            self.ends,
            self.pkey,
            #: key of output token 0 minus prompt_len: output block i's key is
            #: out_base + (i + 1) * block_size
            self.out_base,
            self.seg_runs,
            # named output: its content id string, as the walk names prompt runs
            self.out_content,  # None: fresh output, a run of its own
        ) = static
        self.idx = idx
        self.arrival = arrival
        self.rec = rec
        self.max_out = min(static[0].output_tokens, max_model_len - static[2])
        self._keys: list[int] | None = None
        self.nknown = static[3]  # blocks whose keys are known (ensure_keys)
        self.seg_ends: list[int] | None = None  # segment ends and ranks, on first use
        self.seg_ranks: list[int] = []
        self.nblocks = 0
        self.num_cached_blocks = 0
        self.num_computed = 0
        self.num_out = 0
        self.num_tokens = static[2]
        self.run_seq = 0
        self.status = WAITING

    def key_at(self, i: int) -> int:
        """The key of full block ``i``."""
        if i >= self.nprompt:
            return self.out_base + (i + 1) * self.block_size
        p = bisect.bisect_right(self.ends, i)
        return self.pkey[p] + (i - (self.ends[p - 1] if p else 0)) * self.block_size

    @property
    def keys(self) -> list[int]:
        """Every key known so far as one list (the per-block pool's view)."""
        keys = self._keys
        if keys is None:
            keys = self._keys = []
            bs, start = self.block_size, 0
            for p, end in enumerate(self.ends[:-1]):
                k0 = self.pkey[p]
                assert k0 is not None
                keys.extend(range(k0, k0 + (end - start) * bs, bs))
                start = end
            if self.nknown > len(keys):
                base = self.out_base
                keys.extend(range(base + (len(keys) + 1) * bs, base + self.nknown * bs + 1, bs))
        return keys

    def drop_keys(self) -> None:
        self._keys = []

    def ensure_keys(self, num_full_blocks: int) -> None:
        """Know the keys of the first ``num_full_blocks`` blocks (output blocks as they fill)."""
        if num_full_blocks <= self.nknown:
            return
        self.nknown = num_full_blocks
        keys = self._keys
        if keys is not None and len(keys) < num_full_blocks:
            bs, base = self.block_size, self.out_base
            first = (len(keys) + 1) * bs
            keys.extend(range(base + first, base + num_full_blocks * bs + 1, bs))

    def block_rank(self, index: int) -> int:
        last = (index + 1) * self.block_size - 1
        if last >= self.prompt_len:
            return GENERATION_RANK
        if self.seg_ends is None:
            self.seg_ends = []
            end = 0
            for s in self.req.segments:
                end += s.tokens
                self.seg_ends.append(end)
                self.seg_ranks.append(RANK.get(s.retention, 1))
        return self.seg_ranks[bisect.bisect_right(self.seg_ends, last)]

    def hit_tokens_by_retention(self, hit_tokens: int) -> dict[str, int]:
        out: dict[str, int] = {}
        if hit_tokens <= 0:
            return out
        start = 0
        for s in self.req.segments:
            if start >= hit_tokens:
                break
            n = min(s.tokens, hit_tokens - start)
            if n > 0:
                out[s.retention] = out.get(s.retention, 0) + n
            start += s.tokens
        return out
