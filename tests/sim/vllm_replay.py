"""Replay a token trace through vLLM's own KVCacheManager and print per-request results.

Run with the python that has vLLM installed:  python vllm_replay.py TRACE.json
The driver loop must stay identical to ``drive()`` in test_vllm_differential.py.
Prints one JSON object: {"requests": [...], "queries": Q, "hits": H, "evicted": E}.
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections import deque
from pathlib import Path


def main(path: str) -> None:
    import torch
    from vllm.sampling_params import SamplingParams
    from vllm.utils.hashing import get_hash_fn_by_name
    from vllm.v1.core.kv_cache_manager import KVCacheManager
    from vllm.v1.core.kv_cache_utils import (
        get_request_block_hasher,
        init_none_hash,
    )
    from vllm.v1.kv_cache_interface import (
        FullAttentionSpec,
        KVCacheConfig,
        KVCacheGroupSpec,
    )
    from vllm.v1.request import Request

    trace = json.loads(Path(path).read_text())
    bs, nb, max_len = trace["block_size"], trace["num_blocks"], trace["max_model_len"]
    hash_fn = get_hash_fn_by_name("sha256")
    init_none_hash(hash_fn)
    spec = FullAttentionSpec(block_size=bs, num_kv_heads=1, head_size=8, dtype=torch.float16)
    cfg = KVCacheConfig(
        num_blocks=nb,
        kv_cache_tensors=[],
        kv_cache_groups=[KVCacheGroupSpec(["layer0"], spec)],
    )
    mgr = KVCacheManager(
        cfg,
        max_model_len=max_len,
        scheduler_block_size=bs,
        hash_block_size=bs,
        enable_caching=True,
        log_stats=True,
    )
    pool = mgr.block_pool
    evicted = [0]
    orig = pool._maybe_evict_cached_block

    def counting(block):  # count blocks whose key was dropped for reuse
        r = orig(block)
        evicted[0] += int(r)
        return r

    pool._maybe_evict_cached_block = counting
    hasher = get_request_block_hasher(bs, hash_fn)
    active: deque = deque()
    out = []

    def free_oldest() -> None:
        mgr.free(active.popleft())

    for i, spec_r in enumerate(trace["requests"]):
        req = Request(
            f"r{i}",
            list(spec_r["prompt"]),
            SamplingParams(max_tokens=max(1, len(spec_r["output"]))),
            None,
            block_hasher=hasher,
        )
        hit_tokens = -1
        while True:
            blocks, n_hit, _ = mgr.get_computed_blocks(req)
            got = mgr.allocate_slots(
                req, req.num_tokens - n_hit, n_hit, blocks, has_scheduled_reqs=bool(active)
            )
            if got is not None:
                hit_tokens = n_hit
                mgr.record_prefix_cache_stats(req, n_hit)
                break
            if not active:
                break
            free_oldest()
        if hit_tokens < 0:
            out.append({"hit": -1, "free": pool.get_num_free_blocks()})
            continue
        req.num_computed_tokens = req.num_tokens
        for tok in spec_r["output"]:
            req.append_output_token_ids(tok)
            while mgr.allocate_slots(req, 1) is None:
                free_oldest()
            req.num_computed_tokens += 1
        active.append(req)
        if len(active) > trace["max_active"]:
            free_oldest()
        order = [b.block_id for b in pool.free_block_queue.get_all_free_blocks()]
        rec = {
            "hit": hit_tokens,
            "free": pool.get_num_free_blocks(),
            "usage": mgr.usage,
            "evicted": evicted[0],
            "order": hashlib.sha256(json.dumps(order).encode()).hexdigest()[:16],
        }
        if i % trace["full_order_every"] == 0:
            rec["full_order"] = order
        out.append(rec)
    stats = mgr.make_prefix_cache_stats()
    print(
        json.dumps(
            {"requests": out, "queries": stats.queries, "hits": stats.hits, "evicted": evicted[0]}
        )
    )


if __name__ == "__main__":
    main(sys.argv[1])
