"""Run a step-indexed workload through vLLM's own v1 Scheduler and print what happened.

Run with the python that has vLLM installed:  python vllm_sched_replay.py CASES.json
Each trace of CASES.json (``{name: trace}``, see test_vllm_scheduler_differential.py)
gives the engine limits and, per request, its prompt token ids, the tokens it will
generate, and the step before which it arrives (or the request whose end it
follows, and the steps it waits after it). No model runs: after each
``schedule()`` the driver hands the scheduler the next output token of every
request whose scheduled tokens reach the end of its sequence (a chunk that stops
short of it samples nothing), as a model runner would. Prints one JSON object,
per case name: per request the step it was first scheduled, the step that
produced its first token and its last, its preemptions, its prefix-cache hit
tokens at its first admission and the tokens it had to compute over all its
admissions; the prefix-cache counters; the number of steps; after each step, the
scheduler's gauges (KV usage, running and waiting requests) and the hit tokens so far.

A trace with ``"async": true`` runs vLLM's AsyncScheduler with two batches in flight,
as EngineCore.step_with_batch_queue drives it (a batch lasts one step on the
device; scheduling takes no time). A trace with ``"record_steps": true`` also
prints ``batches``: per batch in scheduling order ``[step it ran, {request: tokens
scheduled}, {request: the block ids its table gained in this scheduling (all of
them after an admission)}, [requests preempted by this scheduling], [requests this
batch finished]]`` (block tables only grow while a request runs, so the gains give
every table at every step).
"""

from __future__ import annotations

import heapq
import json
import sys
import tempfile
from collections import deque
from pathlib import Path
from typing import Any


def write_model_config(d: str) -> None:
    """A Llama config.json in ``d``: all ModelConfig needs (no weights are loaded)."""
    cfg = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "num_hidden_layers": 2,
        "vocab_size": 512,
        "max_position_embeddings": 8192,
        "torch_dtype": "float32",
    }
    (Path(d) / "config.json").write_text(json.dumps(cfg))


def replay(trace: dict, model_dir: str) -> dict:
    """One trace through a fresh Scheduler: what :func:`main` prints for it."""
    import torch
    from vllm.config import CacheConfig, ModelConfig, SchedulerConfig, VllmConfig
    from vllm.sampling_params import SamplingParams
    from vllm.utils.hashing import get_hash_fn_by_name
    from vllm.v1.core.kv_cache_utils import get_request_block_hasher, init_none_hash
    from vllm.v1.core.sched.async_scheduler import AsyncScheduler
    from vllm.v1.core.sched.scheduler import Scheduler
    from vllm.v1.kv_cache_interface import FullAttentionSpec, KVCacheConfig, KVCacheGroupSpec
    from vllm.v1.outputs import ModelRunnerOutput
    from vllm.v1.request import Request
    from vllm.v1.structured_output import StructuredOutputManager

    bs, max_len = trace["block_size"], trace["max_model_len"]
    model = ModelConfig(
        model=model_dir, max_model_len=max_len, skip_tokenizer_init=True, dtype="float32"
    )
    sched_cfg = SchedulerConfig(
        max_num_seqs=trace["max_num_seqs"],
        max_num_batched_tokens=trace["max_num_batched_tokens"],
        max_model_len=max_len,
        enable_chunked_prefill=True,
        policy=trace["policy"],
        scheduler_reserve_full_isl=trace["reserve_full_prompt"],
        watermark=trace["watermark"],
        is_encoder_decoder=False,
    )
    cache = CacheConfig(block_size=bs, enable_prefix_caching=trace["prefix_caching"])
    cache.num_gpu_blocks = trace["num_blocks"]  # as the engine sets it after profiling
    vcfg = VllmConfig(model_config=model, scheduler_config=sched_cfg, cache_config=cache)
    spec = FullAttentionSpec(block_size=bs, num_kv_heads=1, head_size=8, dtype=torch.float16)
    kv_cfg = KVCacheConfig(
        num_blocks=trace["num_blocks"],
        kv_cache_tensors=[],
        kv_cache_groups=[KVCacheGroupSpec(["layer0"], spec)],
    )
    cls = AsyncScheduler if trace.get("async") else Scheduler
    sched = cls(vcfg, kv_cfg, StructuredOutputManager(vcfg), block_size=bs, log_stats=True)
    hash_fn = get_hash_fn_by_name("sha256")
    init_none_hash(hash_fn)
    hasher = get_request_block_hasher(bs, hash_fn)

    reqs = trace["requests"]
    arrivals = [(r["arrival_step"], i) for i, r in enumerate(reqs) if "arrival_step" in r]
    heapq.heapify(arrivals)  # (step, index); a turn joins when the one before it ends
    follow = {r["after"]: i for i, r in enumerate(reqs) if "after" in r}
    outputs = {f"r{i}": r["output"] for i, r in enumerate(reqs)}
    seen: dict[str, dict] = {}
    counters = dict.fromkeys(("queries", "hits", "preempted_queries", "preempted_hits"), 0)
    gauges: dict[int, list] = {}  # step -> [usage, running, waiting, hits so far] after it
    batches: list[list] = []  # with record_steps: what each batch did (see the docstring)
    record = bool(trace.get("record_steps"))
    held: dict[str, int] = {}  # request -> blocks of its table already printed

    def arrive(now: int) -> None:
        while arrivals and arrivals[0][0] <= now:
            i = heapq.heappop(arrivals)[1]
            rid = f"r{i}"
            sp = SamplingParams(max_tokens=len(reqs[i]["output"]), ignore_eos=True)
            sched.add_request(
                Request(
                    rid,
                    list(reqs[i]["prompt"]),
                    sp,
                    None,
                    arrival_time=now + i * 1e-7,  # ties arrive in workload order
                    priority=reqs[i]["priority"],
                    block_hasher=hasher,
                )
            )
            seen[rid] = {"admitted": None, "first_token": None, "finish": None}

    def schedule(step: int) -> tuple:
        """One batch, starting at ``step``: its output and which requests sample."""
        before = {r.request_id for r in sched.running}
        so = sched.schedule()
        samples = []
        for rid in so.num_scheduled_tokens:
            r = sched.requests[rid]
            rec = seen[rid]
            if rid not in before:  # admitted (or resumed) in this step
                hit = r.num_computed_tokens - so.num_scheduled_tokens[rid]
                rec["computed"] = rec.get("computed", 0) + r.num_tokens - hit
                if rec["admitted"] is None:
                    rec["admitted"] = step
                    rec["cached"] = hit
            # the chunk reaches the end of the sequence: the model samples a token
            samples.append(r.num_computed_tokens >= r.num_tokens and not r.is_prefill_chunk)
        if record:
            after = {r.request_id for r in sched.running}
            preempted = sorted(before - after)
            for rid in preempted:
                held[rid] = 0
            blocks = {}
            for rid in so.num_scheduled_tokens:
                table = sched.kv_cache_manager.coordinator.get_blocks(rid)[0]
                if len(table) > held.get(rid, 0):
                    blocks[rid] = [b.block_id for b in table[held.get(rid, 0) :]]
                    held[rid] = len(table)
            sched_tokens = dict(so.num_scheduled_tokens)
            batches.append([step, sched_tokens, blocks, preempted, []])
        return so, samples, step, len(batches) - 1

    def update(so: Any, samples: list[bool], step: int, batch: int) -> None:
        """The model's output of the batch that ran at ``step``."""
        ids = list(so.num_scheduled_tokens)
        sampled = []
        for rid, sample in zip(ids, samples, strict=True):
            r = sched.requests.get(rid)
            if sample and r is not None:
                sampled.append([outputs[rid][min(len(r.output_token_ids), len(outputs[rid]) - 1)]])
                if seen[rid]["first_token"] is None:
                    seen[rid]["first_token"] = step
            else:
                sampled.append([])
        mro = ModelRunnerOutput(
            req_ids=ids,
            req_id_to_index={rid: k for k, rid in enumerate(ids)},
            sampled_token_ids=sampled,
        )
        preempt = {rid: sched.requests[rid] for rid in ids if rid in sched.requests}
        for eco in sched.update_from_output(so, mro).values():
            for o in eco.outputs:
                if o.finish_reason is not None:
                    seen[o.request_id]["finish"] = step
                    if record:
                        batches[batch][4].append(o.request_id)
                    seen[o.request_id]["preemptions"] = preempt[o.request_id].num_preemptions
                    j = follow.get(int(o.request_id[1:]))
                    if j is not None:
                        heapq.heappush(arrivals, (step + 1 + reqs[j]["think_steps"], j))
            st = eco.scheduler_stats
            if st is not None and st.prefix_cache_stats is not None:
                ps = st.prefix_cache_stats
                counters["queries"] += ps.queries
                counters["hits"] += ps.hits
                counters["preempted_queries"] += ps.preempted_queries
                counters["preempted_hits"] += ps.preempted_hits
                gauges[step] = [
                    st.kv_cache_usage,
                    st.num_running_reqs,
                    st.num_waiting_reqs,
                    counters["hits"],
                ]

    step = 0
    if not trace.get("async"):  # EngineCore.step: schedule, run, update
        while arrivals or sched.has_unfinished_requests():
            if not sched.has_unfinished_requests() and arrivals[0][0] > step:
                step = arrivals[0][0]  # idle until the next arrival
            arrive(step)
            update(*schedule(step))
            step += 1
    else:  # EngineCore.step_with_batch_queue with two batches in flight
        inflight: deque = deque()
        now = gpu_free = 0
        while arrivals or sched.has_unfinished_requests() or inflight:
            if not inflight and not sched.has_unfinished_requests() and arrivals[0][0] > now:
                now = arrivals[0][0]
            arrive(now)
            if sched.has_unfinished_requests():
                start = max(now, gpu_free)
                batch = schedule(start)
                ran = batch[0].total_num_scheduled_tokens > 0
                if ran:
                    gpu_free = start + 1
                inflight.appendleft((batch, ran))
                if len(inflight) < 2 and (ran or sched.has_unfinished_requests()):
                    continue
            if inflight:
                batch, ran = inflight.pop()
                if ran:
                    now = max(now, batch[2] + 1)  # wait for it to finish
                update(*batch)
        step = now
    return {
        "requests": [seen[f"r{i}"] for i in range(len(reqs))],
        "steps": step,
        "gauges": gauges,
        **counters,
        **({"batches": batches} if record else {}),
    }


def main(path: str) -> None:
    cases = json.loads(Path(path).read_text())
    with tempfile.TemporaryDirectory(prefix="kvlab-sched-") as d:
        write_model_config(d)
        print(json.dumps({name: replay(trace, d) for name, trace in cases.items()}))


if __name__ == "__main__":
    main(sys.argv[1])
