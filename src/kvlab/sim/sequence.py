"""Seq: the simulator's running state of one request."""

from __future__ import annotations

import bisect
from typing import Any

from kvlab.results import RequestRecord
from kvlab.sim.hashing import ChainInterner
from kvlab.workload.records import RETENTION_CLASSES, Request

RANK = {name: i for i, name in enumerate(RETENTION_CLASSES)}
GENERATION_RANK = RANK["generation"]

WAITING, RUNNING, FINISHED = 0, 1, 2

#: A block index no request reaches.
NEVER = 1 << 62


class Seq:
    """One request inside the engine.

    ``num_tokens`` = prompt + generated tokens; ``num_computed`` tokens have KV.
    A running request decodes when ``num_computed == num_tokens - 1``.
    ``keys[i]`` is the key of full block i (prompt blocks at creation, output
    blocks as they fill); ``blocks`` is the block table of the per-block pool
    (the KVManager owns it), ``nblocks`` its length; over the extent pool the
    table is ``table`` + ``pending`` (see :class:`kvlab.sim.extents.ExtentKV`).
    ``ends``: block indices where the runs of ``keys`` end (the output's never does).
    """

    __slots__ = (
        "arrival",
        "block_size",
        "blocks",
        "da",
        "dz",
        "ends",
        "idx",
        "in_cohort",
        "interner",
        "keys",
        "last_ext",
        "lazy_from",
        "max_out",
        "nblocks",
        "nkeyed",
        "num_cached_blocks",
        "num_computed",
        "num_out",
        "num_tokens",
        "out_base",
        "out_content",
        "pending",
        "prompt_len",
        "prompt_node",
        "rec",
        "req",
        "run_seq",
        "seg_ends",
        "seg_ranks",
        "seg_runs",
        "status",
        "table",
    )

    def __init__(
        self,
        idx: int,
        req: Request,
        arrival: int,
        interner: ChainInterner,
        block_size: int,
        max_model_len: int,
        rec: RequestRecord,
    ) -> None:
        self.idx = idx
        self.req = req
        self.arrival = arrival
        self.interner = interner
        self.block_size = block_size
        self.rec = rec
        self.prompt_len = req.prompt_tokens
        self.max_out = min(req.output_tokens, max_model_len - self.prompt_len)
        self.ends: list[int] = []
        self.seg_runs: list[tuple[int, int]] = []
        self.keys, self.prompt_node = interner.walk(
            req.segments, block_size, self.ends, self.seg_runs
        )
        self.ends.append(NEVER)
        #: first block of fresh output (keyed lazily over the extent pool), if any
        self.lazy_from = len(self.keys) if req.output_content_id is None else NEVER
        self.out_content = (
            interner.content(req.output_content_id)
            if req.output_content_id is not None
            else interner.fresh_content()
        )
        self.seg_ends: list[int] | None = None  # segment ends and ranks, on first use
        self.seg_ranks: list[int] = []
        self.out_base: int | None = None  # key of output token 0 minus prompt_len, once known
        self.blocks: list[int] = []
        self.nblocks = self.nkeyed = 0
        self.in_cohort = False  # see kvlab.sim.cohort: counters as of step dz
        self.dz = self.da = 0
        self.table: list[list[Any]] = []
        self.pending: list[list[int]] = []
        self.last_ext: Any = None
        self.num_cached_blocks = 0
        self.num_computed = 0
        self.num_out = 0
        self.num_tokens = self.prompt_len
        self.run_seq = 0
        self.status = WAITING

    def ensure_keys(self, num_full_blocks: int) -> None:
        keys = self.keys
        if len(keys) >= num_full_blocks:
            return
        bs, base = self.block_size, self.out_base
        if base is None:  # interned on first use, as run ids are given in first-use order
            base = self.out_base = (
                self.interner.key(self.prompt_node, self.out_content, 0) - self.prompt_len
            )
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
        start = 0
        for s in self.req.segments:
            if start >= hit_tokens:
                break
            n = min(s.tokens, hit_tokens - start)
            if n > 0:
                out[s.retention] = out.get(s.retention, 0) + n
            start += s.tokens
        return out
