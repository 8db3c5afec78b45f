"""What ``kvlab/KVPressure-v0`` shows a policy: the top-K candidate requests, the Box
vector (for networks) and the compact dict (for LLM policies).

Candidates are the running requests holding the most KV blocks (ties: the earlier
arrival first), at most ``k``; slot ``i`` of the action is candidate ``i``.

Box vector, ``NUM_GLOBAL + k * NUM_CAND`` float32 values in ``[-1, 64]``:

- global (:data:`GLOBAL_FEATURES`): KV usage of the budgeted pool (vLLM's
  ``kv_cache_usage_perc``), the budget (share of the pool), episode remaining
  (decision steps left / steps), running / max_num_seqs, waiting / max_num_seqs (clipped
  at 8), pending queue growth since the previous decision / max_num_seqs (clipped to
  -1..8), time above 0.95 usage (share of the episode's engine time so far), free
  blocks / usable blocks, ``log1p`` failures so far, swap seconds so far (clipped at 64),
  swapped-out requests / max_num_seqs;
- per candidate (:data:`CANDIDATE_FEATURES`): 1 for a real candidate (0 pads), blocks
  held / usable blocks, progress (output tokens made / asked), protected share (prompt
  tokens in ``system`` or ``context`` segments / prompt tokens), value (1 - mean
  retention rank / 4 over the prompt: 1 all system, 0 all ephemeral), KV tier / 2 (0 the
  run's dtype, 0.5 int8-like, 1 int4-like), 1 if it may be compressed, 1 if it may be
  swapped,
  ``log1p`` age in seconds, 1 once its prefill is done (decoding).
"""

from __future__ import annotations

import math
from typing import Any

from kvlab.sim.cost_model import TICKS_PER_S
from kvlab.sim.sequence import RANK, Seq

GLOBAL_FEATURES: tuple[str, ...] = (
    "usage",
    "budget",
    "episode_remaining",
    "running",
    "waiting",
    "pending_queue_growth",
    "time_above_0_95",
    "free",
    "failures",
    "swap_latency_s",
    "swapped",
)
CANDIDATE_FEATURES: tuple[str, ...] = (
    "valid",
    "blocks",
    "progress",
    "protected_share",
    "value",
    "tier",
    "can_compress",
    "can_swap",
    "age",
    "decoding",
)
NUM_GLOBAL = len(GLOBAL_FEATURES)
NUM_CAND = len(CANDIDATE_FEATURES)
OBS_LOW, OBS_HIGH = -1.0, 64.0

_PROTECTED = {"system", "context"}
_MAX_RANK = max(RANK.values())


class SeqFacts:
    """What a request's prompt says about its value, computed once per request:
    ``protected_tokens`` (prompt tokens in system or context segments), their share,
    ``value`` (1 - mean retention rank / 4) and ``main_class`` (the retention class
    with the most prompt tokens)."""

    __slots__ = ("main_class", "protected_share", "protected_tokens", "value")

    def __init__(self, seq: Seq) -> None:
        per: dict[str, int] = {}
        for s in seq.req.segments:
            per[s.retention] = per.get(s.retention, 0) + s.tokens
        total = max(1, seq.prompt_len)
        self.protected_tokens = sum(n for c, n in per.items() if c in _PROTECTED)
        self.protected_share = self.protected_tokens / total
        rank = sum(RANK.get(c, 1) * n for c, n in per.items()) / total
        self.value = 1.0 - rank / _MAX_RANK
        self.main_class = max(per, key=lambda c: (per[c], -RANK.get(c, 1))) if per else "none"


def facts_of(seq: Seq, cache: dict[int, SeqFacts]) -> SeqFacts:
    f = cache.get(seq.idx)
    if f is None:
        f = cache[seq.idx] = SeqFacts(seq)
    return f


def protected_tokens_in(seq: Seq, tokens: int) -> int:
    """Tokens among the request's first ``tokens`` that are in system or context
    segments (output tokens beyond the prompt are generation: never protected)."""
    out = start = 0
    for s in seq.req.segments:
        if start >= tokens:
            break
        if s.retention in _PROTECTED:
            out += min(s.tokens, tokens - start)
        start += s.tokens
    return out


def candidates(running: list[Seq], k: int) -> list[Seq]:
    """The ``k`` running requests holding the most blocks (earlier arrival first on a tie)."""
    if len(running) <= k:
        return sorted(running, key=lambda s: (-s.nblocks, s.arrival, s.idx))
    import heapq

    return heapq.nsmallest(k, running, key=lambda s: (-s.nblocks, s.arrival, s.idx))


def candidate_row(
    seq: Seq,
    f: SeqFacts,
    usable: int,
    now: int,
    tier: int,
    can_compress: bool,
    can_swap: bool,
) -> list[float]:
    """The candidate's NUM_CAND features (module doc)."""
    return [
        1.0,
        seq.nblocks / usable,
        seq.num_out / seq.max_out if seq.max_out > 0 else 1.0,
        f.protected_share,
        f.value,
        tier / 2.0,
        1.0 if can_compress else 0.0,
        1.0 if can_swap else 0.0,
        min(math.log1p(max(0, now - seq.arrival) / TICKS_PER_S), OBS_HIGH),
        1.0 if seq.num_computed >= seq.num_tokens - 1 else 0.0,
    ]


def request_summary(seq: Seq, f: SeqFacts, usable: int, tier: int) -> dict[str, Any]:
    """One request in the compact observation."""
    return {
        "seq_id": seq.req.request_id,
        "blocks": seq.nblocks,
        "share": round(seq.nblocks / usable, 4),
        "progress": round(seq.num_out / seq.max_out, 4) if seq.max_out > 0 else 1.0,
        "retention": f.main_class,
        "protected_share": round(f.protected_share, 4),
        "tier": ("fp16", "int8", "int4")[min(tier, 2)],
    }
