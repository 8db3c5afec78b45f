"""``chat``: many users sharing one system prompt.

Each user (session) sends ``turns`` requests (default one). Every prompt
starts with the same ``system_tokens``-token system prompt followed by the
user's own message; with ``history`` the conversation so far is re-sent too
(see ``sessions``).

KV effect: the canonical prefix-caching win. Without history, the reuse upper
bound is ``(R - 1) * floor(S / B) * B`` hit tokens over all prompt tokens (R
requests, S system tokens, block size B): every request after the first
re-uses the system prompt's full blocks, and nothing else is shared.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kvlab.workload.generators._common import CommonParams, in_run_order, seg
from kvlab.workload.generators.sessions import conversation
from kvlab.workload.records import Request


@dataclass(frozen=True)
class ChatParams(CommonParams):
    sessions: int = 200
    turns: int = 1
    rate_per_s: float = 4.0
    think_time_s: float = 5.0
    system_tokens: int = 1024
    user_tokens: int = 128
    output_tokens: int = 128
    history: bool = False

    POSITIVE = ("sessions", "turns", "output_tokens")
    PER_SESSION = ("turns",)


def build(p: ChatParams, rng: np.random.Generator) -> tuple[Request, ...]:
    system = seg("system", p.system_tokens, "chat/system", "system")
    starts = p.starts(rng)
    reqs: list[Request] = []
    for i in range(p.sessions):
        reqs += conversation(
            name="chat",
            session=f"u{i}",
            prefix=(system,),
            user_lens=p.lengths(rng, p.user_tokens, p.turns),
            output_lens=p.lengths(rng, p.output_tokens, p.turns),
            start_s=float(starts[i]),
            thinks=p.thinks(rng, p.turns - 1),
            history=p.history,
            cls="chat",
        )
    return in_run_order(reqs)
