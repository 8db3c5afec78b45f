"""kvlab's block pool and KV manager against vLLM's own KVCacheManager.

Both sides replay the same randomized token trace (shared prefixes, generated
tokens, a pool small enough to force evictions) with the same driver loop; the
vLLM side runs in a subprocess of $KVLAB_VLLM_PYTHON (tests/sim/vllm_replay.py).
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections import deque
from collections.abc import Hashable
from pathlib import Path

import numpy as np
import pytest
from sim_helpers import run_in_vllm

from kvlab.sim.block_pool import BlockPool
from kvlab.sim.kv_manager import KVManager


def make_trace(seed: int, n: int, block_size: int = 16, num_blocks: int = 400) -> dict:
    rng = np.random.default_rng(seed)
    prefixes = [rng.integers(0, 5000, int(rng.integers(8, 120))).tolist() for _ in range(40)]
    reqs = []
    for _ in range(n):
        p = prefixes[int(rng.zipf(1.5)) % len(prefixes)] if rng.random() < 0.8 else []
        tail = rng.integers(0, 5000, int(rng.integers(1, 90))).tolist()
        prompt = p + tail
        if rng.random() < 0.3 and reqs:  # a follow-up turn: an earlier prompt + output
            prev = reqs[int(rng.integers(0, len(reqs)))]
            prompt = prev["prompt"] + prev["output"] + tail
        prompt = prompt[:300]
        out = rng.integers(0, 5000, int(rng.integers(0, 40))).tolist()
        reqs.append({"prompt": prompt, "output": out})
    return {
        "block_size": block_size,
        "num_blocks": num_blocks,
        "max_model_len": 4096,
        "max_active": 6,
        "full_order_every": 500,
        "requests": reqs,
    }


class TokenSeq:
    """A request whose block keys are chained token hashes (any hashable works)."""

    def __init__(self, tokens: list[int], bs: int, intern: dict) -> None:
        self.tokens = tokens
        self.bs = bs
        self.intern = intern
        self.blocks: list[int] = []
        self.num_cached_blocks = 0
        self.num_computed = 0
        self.keys: list[Hashable] = []
        self.ensure_keys(len(tokens) // bs)

    @property
    def num_tokens(self) -> int:
        return len(self.tokens)

    def ensure_keys(self, n: int) -> None:
        while len(self.keys) < n:
            i = len(self.keys)
            parent = self.keys[-1] if self.keys else None
            k = (parent, tuple(self.tokens[i * self.bs : (i + 1) * self.bs]))
            self.keys.append(self.intern.setdefault(k, len(self.intern)))


def drive(trace: dict) -> dict:
    """kvlab side of the replay; the loop mirrors vllm_replay.py."""
    bs = trace["block_size"]
    pool = BlockPool(trace["num_blocks"])
    mgr = KVManager(pool, bs, trace["max_model_len"])
    intern: dict = {}
    active: deque[TokenSeq] = deque()
    out = []
    queries = hits = 0
    for i, r in enumerate(trace["requests"]):
        seq = TokenSeq(list(r["prompt"]), bs, intern)
        hit_tokens = -1
        while True:
            hit = mgr.lookup(seq.keys, seq.num_tokens)
            n_hit = len(hit) * bs
            if mgr.admit(seq, seq.num_tokens - n_hit, hit) is not None:
                hit_tokens = n_hit
                queries += seq.num_tokens
                hits += n_hit
                break
            if not active:
                break
            mgr.free(active.popleft())
        if hit_tokens < 0:
            out.append({"hit": -1, "free": pool.num_free})
            continue
        seq.num_computed = seq.num_tokens
        for tok in r["output"]:
            seq.tokens.append(tok)
            while not mgr.extend(seq, 1):
                mgr.free(active.popleft())
            seq.num_computed += 1
        active.append(seq)
        if len(active) > trace["max_active"]:
            mgr.free(active.popleft())
        order = pool.free_order()
        rec = {
            "hit": hit_tokens,
            "free": pool.num_free,
            "usage": pool.usage(),
            "evicted": pool.num_evicted,
            "order": hashlib.sha256(json.dumps(order).encode()).hexdigest()[:16],
        }
        if i % trace["full_order_every"] == 0:
            rec["full_order"] = order
        out.append(rec)
    return {"requests": out, "queries": queries, "hits": hits, "evicted": pool.num_evicted}


def test_trace_driver_exercises_evictions() -> None:
    res = drive(make_trace(1, 400))
    assert res["evicted"] > 0
    assert 0 < res["hits"] < res["queries"]


@pytest.mark.vllm
@pytest.mark.slow
def test_block_pool_matches_vllm(tmp_path: Path, vllm_python: str) -> None:
    trace = make_trace(seed=20261126, n=10_000)
    theirs = run_in_vllm(vllm_python, "vllm_replay.py", trace, tmp_path)
    ours = drive(trace)
    assert len(theirs["requests"]) == len(ours["requests"]) == 10_000
    mismatches = [
        i
        for i, (a, b) in enumerate(zip(ours["requests"], theirs["requests"], strict=True))
        if a != b
    ]
    assert not mismatches, (
        f"{len(mismatches)} mismatches, first at request {mismatches[0]}: "
        f"kvlab {ours['requests'][mismatches[0]]} vs vLLM {theirs['requests'][mismatches[0]]}"
    )
    assert (ours["queries"], ours["hits"], ours["evicted"]) == (
        theirs["queries"],
        theirs["hits"],
        theirs["evicted"],
    )
    assert ours["evicted"] > 1000  # the trace really forces evictions
    print(
        f"differential: {len(ours['requests'])} requests, 0 mismatches, "
        f"hits {ours['hits']}/{ours['queries']} tokens, {ours['evicted']} evictions",
        file=sys.stderr,
    )
