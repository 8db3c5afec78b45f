"""Replay a trace through vLLM's own hybrid KVCacheManager and print what it did.

Run with the python that has vLLM installed:  python hybrid_replay.py TRACE.json...
The trace gives the groups (``[["full", null], ["sliding", 8], ["mamba", null], ...]``),
block size, block count, max_model_len, in-flight tokens, chunk size, whether prefix
caching is on (``enable_caching``, default true) and requests; the driver loop must
stay identical to ``drive()`` in test_hybrid_differential.py. Prints one JSON list, one
record per request (see ``drive``), per trace, one a line.
"""

from __future__ import annotations

import json
import math
import sys
from collections import deque
from pathlib import Path


def main(paths: list[str]) -> None:
    for path in paths:
        replay(path)


def replay(path: str) -> None:
    import torch
    from vllm.sampling_params import SamplingParams
    from vllm.utils.hashing import get_hash_fn_by_name
    from vllm.v1.core.kv_cache_manager import KVCacheManager
    from vllm.v1.core.kv_cache_utils import get_request_block_hasher, init_none_hash
    from vllm.v1.kv_cache_interface import (
        FullAttentionSpec,
        KVCacheConfig,
        KVCacheGroupSpec,
        MambaSpec,
        SlidingWindowSpec,
    )
    from vllm.v1.request import Request

    trace = json.loads(Path(path).read_text())
    bs = trace["block_size"]
    hash_fn = get_hash_fn_by_name("sha256")
    init_none_hash(hash_fn)
    caching = trace.get("enable_caching", True)
    groups = []
    for g, (kind, window) in enumerate(trace["groups"]):
        common = dict(block_size=bs, num_kv_heads=1, head_size=8, dtype=torch.float16)
        if kind == "full":
            spec = FullAttentionSpec(**common)
        elif kind == "sliding":
            spec = SlidingWindowSpec(**common, sliding_window=window)
        else:
            # As vLLM configures a hybrid Mamba model: with prefix caching the state
            # block is the attention block ("align" mode), without it one block of
            # max_model_len tokens ("none"); the page is padded to the attention page.
            spec = MambaSpec(
                block_size=bs if caching else trace["max_model_len"],
                shapes=((2, 4), (4,)),
                dtypes=(torch.float16, torch.float32),
                page_size_padded=FullAttentionSpec(**common).page_size_bytes,
                mamba_cache_mode="align" if caching else "none",
            )
        groups.append(KVCacheGroupSpec([f"layer{g}"], spec))
    cfg = KVCacheConfig(num_blocks=trace["num_blocks"], kv_cache_tensors=[], kv_cache_groups=groups)
    # vLLM resolve_kv_cache_block_sizes: the LCM of the groups' block sizes (hashing at
    # it too when caching is off)
    sched_bs = math.lcm(*(g.kv_cache_spec.block_size for g in groups))
    mgr = KVCacheManager(
        cfg,
        max_model_len=trace["max_model_len"],
        scheduler_block_size=sched_bs,
        hash_block_size=bs if caching else sched_bs,
        max_in_flight_tokens=trace["in_flight_tokens"],
        enable_caching=caching,
    )
    hasher = get_request_block_hasher(bs, hash_fn)

    def new(i: int, prompt: list[int], out: list[int]) -> object:
        return Request(
            f"r{i}",
            list(prompt),
            SamplingParams(max_tokens=max(1, len(out))),
            None,
            block_hasher=hasher,
        )

    def lookup(req):  # -> (hit object, hit tokens)
        blocks, n, req.shared_prefix_boundary = mgr.get_computed_blocks(req)
        return blocks, n

    # vLLM's scheduler clips prefill chunks for Mamba "align" mode; its own method,
    # with the settings it has for these specs (no EAGLE, no prefill checkpoint
    # blocks, hashing at the block size, no shared-prefix checkpoint)
    from types import SimpleNamespace

    from vllm.v1.core.sched.scheduler import Scheduler

    split = SimpleNamespace(
        cache_config=SimpleNamespace(block_size=bs),
        block_size=bs,
        hash_block_size=bs,
        mamba_partial_cache_hit=False,
        use_eagle_block_drop=False,
        mamba_has_prefill_checkpoint_blocks=False,
        mamba_prefill_checkpoint_alignment=None,
        mamba_shared_prefix_checkpoint=False,
        max_num_scheduled_tokens=trace["in_flight_tokens"],
        scheduler_config=SimpleNamespace(long_prefill_token_threshold=0),
    )
    aligned = caching and any(kind == "mamba" for kind, _ in trace["groups"])

    def clip(req, n, hit, n_hit):
        if not aligned:
            return n
        return Scheduler._mamba_block_aligned_split(split, req, n, n_hit, 0)

    def alloc(req, n_new, hit, n_hit, first, has_running):
        if first:
            got = mgr.allocate_slots(
                req,
                n_new,
                n_hit,
                hit,
                full_sequence_must_fit=True,
                has_scheduled_reqs=has_running,
            )
        else:
            got = mgr.allocate_slots(req, n_new)
        return got is not None

    def advance(req, n):
        req.num_computed_tokens += n

    def append(req, tok):
        req.append_output_token_ids(tok)

    def tables(req):
        return [[b.block_id for b in g] for g in mgr.coordinator.get_blocks(req.request_id)]

    def free(req):
        mgr.free(req)

    def num_free():
        return mgr.block_pool.get_num_free_blocks()

    def step():
        mgr.new_step_starts()

    def computed(req):
        return req.num_computed_tokens

    def num_tokens(req):
        return req.num_tokens

    ops = dict(
        new=new,
        lookup=lookup,
        alloc=alloc,
        advance=advance,
        append=append,
        tables=tables,
        free=free,
        num_free=num_free,
        computed=computed,
        num_tokens=num_tokens,
        step=step,
        clip=clip,
    )
    print(json.dumps(drive(trace, ops)), flush=True)


# The driver: kept identical to test_hybrid_differential.drive (the test checks it).
def drive(trace, ops):
    chunk, max_active = trace["chunk"], trace["max_active"]
    active = deque()
    out = []
    for i, spec in enumerate(trace["requests"]):
        req = ops["new"](i, spec["prompt"], spec["output"])
        rec = {"hit": -1, "frees": 0}
        # a request marked same_step is admitted in the step that ran the previous
        # one's last allocation; refused, it is retried once in a new step
        new_step = not spec.get("same_step")
        while True:
            if new_step:
                ops["step"]()
            hit, n_hit = ops["lookup"](req)
            first = ops["clip"](req, min(chunk, ops["num_tokens"](req) - n_hit), hit, n_hit)
            if first == 0:
                rec["stalled"] = True
                break
            if ops["alloc"](req, first, hit, n_hit, True, bool(active)):
                rec["hit"] = n_hit
                ops["advance"](req, n_hit + first)
                break
            if not new_step:
                new_step = True
                rec["retried"] = True
                continue
            if not active:
                break
            ops["free"](active.popleft())
            rec["frees"] += 1
        if rec["hit"] < 0:
            rec["free"] = ops["num_free"]()
            out.append(rec)
            continue
        ok = True
        steps = []
        while ok and ops["computed"](req) < ops["num_tokens"](req):
            n = ops["clip"](req, min(chunk, ops["num_tokens"](req) - ops["computed"](req)), None, 0)
            if n == 0:
                ok = False
                rec["stalled"] = True
                break
            ops["step"]()
            while not ops["alloc"](req, n, None, 0, False, True):
                if not active:
                    ok = False
                    break
                ops["free"](active.popleft())
                rec["frees"] += 1
            if ok:
                ops["advance"](req, n)
                steps.append([ops["tables"](req), ops["num_free"](), n])
        for tok in spec["output"] if ok else []:
            ops["append"](req, tok)
            ops["step"]()
            while not ops["alloc"](req, 1, None, 0, False, True):
                if not active:
                    ok = False
                    break
                ops["free"](active.popleft())
                rec["frees"] += 1
            if not ok:
                break
            ops["advance"](req, 1)
            steps.append([ops["tables"](req), ops["num_free"](), 1])
        rec["steps"] = steps
        rec["ok"] = ok
        rec["tables"] = ops["tables"](req)
        if ok:
            active.append(req)
            if len(active) > max_active:
                ops["free"](active.popleft())
        else:
            ops["free"](req)
        rec["free"] = ops["num_free"]()
        out.append(rec)
    return out


if __name__ == "__main__":
    main(sys.argv[1:])
