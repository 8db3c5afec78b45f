"""Differential test: kvlab's HybridKV against vLLM's own hybrid KVCacheManager.

The same driver (``drive`` in hybrid_replay.py, imported here, run there in
``$KVLAB_VLLM_PYTHON``) admits requests with their prefix hits, prefills them in
chunks, decodes their outputs and frees the oldest request whenever an allocation
fails, on both managers; every request's hit, frees, outcome and block table of
every group after every step, and the pool's free count, must be the same.

Shapes (tiny versions): gpt-oss (one sliding group of window 128, one full group),
Gemma 3 (five sliding groups of window 32 for 1024, one full group) and Nemotron-H (two
Mamba state groups and one full-attention group, as vLLM groups 4 Mamba and 2 attention
layers), the last with prefix caching (vLLM's "align" Mamba cache mode; every chunk
goes through vLLM's own ``Scheduler._mamba_block_aligned_split`` there and
``HybridKV.clip_chunk`` here) and without ("none" mode). Some requests are admitted in
the step that cached the previous request's last blocks, to exercise vLLM's rule that
a Mamba hit cached in the same step waits a step.
"""

from __future__ import annotations

import json
import random
import subprocess
from pathlib import Path
from typing import Any

import pytest
from hybrid_replay import drive

from kvlab.sim.block_pool import BlockPool
from kvlab.sim.hybrid import GroupRule, HybridKV

REPLAY = Path(__file__).with_name("hybrid_replay.py")

SHAPES: dict[str, dict[str, Any]] = {
    "gpt-oss": {
        "groups": [["sliding", 128], ["full", None]],
        "block_size": 16,
        "num_blocks": 90,
        "max_model_len": 1024,
        "chunk": 96,
    },
    "gemma-3": {
        "groups": [["sliding", 32]] * 5 + [["full", None]],
        "block_size": 8,
        "num_blocks": 160,
        "max_model_len": 512,
        "chunk": 40,
    },
    "nemotron-h": {
        "groups": [["mamba", None], ["mamba", None], ["full", None]],
        "block_size": 16,
        "num_blocks": 150,
        "max_model_len": 1024,
        "chunk": 64,
    },
    "nemotron-h-no-caching": {
        "groups": [["mamba", None], ["mamba", None], ["full", None]],
        "block_size": 16,
        "num_blocks": 90,
        "max_model_len": 1024,
        "chunk": 64,
        "enable_caching": False,
    },
}


def make_trace(shape: str, seed: int, n: int) -> dict[str, Any]:
    """Requests over a few shared prefixes (exact repeats included), random outputs."""
    rng = random.Random(seed)
    base = SHAPES[shape]
    bs = base["block_size"]
    prefixes = [[rng.randrange(1000) for _ in range(rng.randrange(bs, 20 * bs))] for _ in range(3)]
    reqs: list[dict[str, Any]] = []
    for _ in range(n):
        if reqs and rng.random() < 0.25:
            prompt = list(rng.choice(reqs)["prompt"])
        else:
            prompt = rng.choice(prefixes) + [
                rng.randrange(1000) for _ in range(rng.randrange(1, 8 * bs))
            ]
        out = [rng.randrange(1000) for _ in range(rng.randrange(0, 3 * bs))]
        reqs.append({"prompt": prompt, "output": out})
    same = random.Random(seed + 1000)  # its own stream: the other draws stay as they were
    state = any(kind == "mamba" for kind, _ in base["groups"])
    for i, req in enumerate(reqs):
        req["same_step"] = same.random() < 0.3
        if state and i and req["same_step"] and same.random() < 0.6:
            # extends the previous prompt, whose last chunk (no output) cached its states
            prev = reqs[i - 1]
            prev["output"] = []
            req["prompt"] = prev["prompt"] + [same.randrange(1000) for _ in range(1, 3 * bs)]
    return {
        **base,
        "in_flight_tokens": base["chunk"],
        "max_active": rng.choice([2, 3, 5]),
        "requests": reqs,
    }


class _Seq:
    """The request state HybridKV reads and keeps (tokens, keys, tables)."""

    def __init__(self, prompt: list[int], block_size: int) -> None:
        self.tokens = list(prompt)
        self.prompt_len = len(prompt)
        self.block_size = block_size
        self.num_tokens = len(prompt)
        self.num_computed = 0
        self.tables: list[list[int]] = []
        self.cached: list[int] = []
        self.admitted = False
        self.nblocks = 0
        self.num_cached_blocks = 0
        self.state_last: int | None = None
        self.state_retired = 0
        self.junction = 0

    @property
    def keys(self) -> list[tuple[int, ...]]:
        bs = self.block_size
        return [tuple(self.tokens[: (i + 1) * bs]) for i in range(len(self.tokens) // bs)]

    def ensure_keys(self, num_full_blocks: int) -> None:
        """Keys come from the tokens themselves."""


def kvlab_drive(trace: dict[str, Any]) -> list[dict[str, Any]]:
    bs = trace["block_size"]
    kv = HybridKV(
        BlockPool(trace["num_blocks"], enable_caching=trace.get("enable_caching", True)),
        bs,
        trace["max_model_len"],
        [GroupRule(kind, window) for kind, window in trace["groups"]],
        reserve_full_prompt=True,
        in_flight_tokens=trace["in_flight_tokens"],
    )

    def lookup(seq: _Seq) -> tuple[Any, int]:
        hit = kv.lookup_seq(seq)  # type: ignore[arg-type]
        return hit, len(hit) * bs

    clock = [0]  # the step, as the tick the pool sees

    def alloc(seq: Any, n_new: int, hit: Any, n_hit: int, first: bool, running: bool) -> bool:
        if first:
            return kv.admit(seq, n_new, hit, clock[0], has_running=running) is not None
        return kv.extend(seq, n_new, clock[0])

    def step() -> None:
        clock[0] += 1

    def advance(seq: _Seq, n: int) -> None:
        seq.num_computed += n

    def append(seq: _Seq, tok: int) -> None:
        seq.tokens.append(tok)
        seq.num_tokens += 1

    ops = {
        "new": lambda i, prompt, out: _Seq(prompt, bs),
        "lookup": lookup,
        "alloc": alloc,
        "advance": advance,
        "append": append,
        "tables": lambda seq: [list(t) for t in seq.tables],
        "free": kv.free,
        "num_free": lambda: kv.pool.num_free,
        "computed": lambda seq: seq.num_computed,
        "num_tokens": lambda seq: seq.num_tokens,
        "step": step,
        "clip": lambda seq, n, hit, n_hit: kv.clip_chunk(
            seq, seq.num_computed + n_hit, n, trace["in_flight_tokens"], hit
        ),
    }
    return drive(trace, ops)  # type: ignore[no-any-return]


def vllm_drive(py: str, traces: list[dict[str, Any]], tmp: Path) -> list[list[dict[str, Any]]]:
    """Every trace through vLLM's manager, in one interpreter."""
    paths = []
    for i, trace in enumerate(traces):
        path = tmp / f"trace{i}.json"
        path.write_text(json.dumps(trace))
        paths.append(str(path))
    res = subprocess.run([py, str(REPLAY), *paths], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    lines = [x for x in res.stdout.splitlines() if x.startswith("[")]
    assert len(lines) == len(traces), res.stdout[-2000:]
    return [json.loads(x) for x in lines]


def compare(ours: list[dict[str, Any]], theirs: list[dict[str, Any]]) -> tuple[int, int, list[str]]:
    """(requests compared, steps compared, mismatches)."""
    bad: list[str] = []
    steps = 0
    for i, (a, b) in enumerate(zip(ours, theirs, strict=True)):
        steps += len(b.get("steps", []))
        for field in ("hit", "retried", "stalled", "frees", "ok", "free", "tables"):
            if a.get(field) != b.get(field):
                bad.append(f"request {i} {field}: kvlab {a.get(field)} vLLM {b.get(field)}")
        for j, (sa, sb) in enumerate(zip(a.get("steps", []), b.get("steps", []), strict=False)):
            if sa != sb:
                bad.append(f"request {i} step {j}: kvlab {sa} vLLM {sb}")
                break
        if len(a.get("steps", [])) != len(b.get("steps", [])):
            bad.append(f"request {i}: step counts differ")
    return len(theirs), steps, bad


def test_driver_exercises_sliding_hits_and_frees() -> None:
    """The kvlab side alone: traces hit, free windows and run out of blocks."""
    out = kvlab_drive(make_trace("gpt-oss", 1, 60))
    assert any(r["hit"] > 0 for r in out)
    assert any(r["frees"] > 0 for r in out)
    nulls = [t for r in out if r.get("tables") for t in r["tables"][:1] if 0 in t]
    assert nulls, "no sliding table ever freed a block outside its window"


TRACES_PER_SHAPE = 6


@pytest.fixture(scope="module")
def vllm_results(vllm_python: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    traces = {
        shape: [make_trace(shape, seed, 40) for seed in range(TRACES_PER_SHAPE)]
        for shape in sorted(SHAPES)
    }
    flat = [t for shape in sorted(SHAPES) for t in traces[shape]]
    outs = vllm_drive(vllm_python, flat, tmp_path_factory.mktemp("hybrid"))
    theirs = {
        shape: outs[i * TRACES_PER_SHAPE : (i + 1) * TRACES_PER_SHAPE]
        for i, shape in enumerate(sorted(SHAPES))
    }
    return {"traces": traces, "theirs": theirs}


@pytest.mark.vllm
@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_hybrid_matches_vllm(shape: str, vllm_results: dict[str, Any]) -> None:
    traces = vllm_results["traces"][shape]
    theirs = vllm_results["theirs"][shape]
    total_req = total_steps = hits = refused = 0
    mismatches: list[str] = []
    for trace, their in zip(traces, theirs, strict=True):
        n_req, n_steps, bad = compare(kvlab_drive(trace), their)
        total_req += n_req
        total_steps += n_steps
        hits += sum(1 for r in their if r["hit"] > 0)
        refused += sum(1 for r in their if r.get("retried"))
        mismatches += bad
    print(
        f"hybrid {shape}: {len(traces)} traces, {total_req} requests, {total_steps} steps, "
        f"{hits} prefix hits, {refused} admissions retried in a new step, "
        f"{len(mismatches)} mismatches"
    )
    caching = SHAPES[shape].get("enable_caching", True)
    assert total_steps > 0 and (hits > 0) == caching
    assert not mismatches, mismatches[:5]
