"""``sessions``: multi-turn conversations that re-send their growing history.

Each session is a user talking to an assistant for ``turns`` turns. Turn t's
prompt is the shared system prompt, then every earlier user message and
answer, then the new user message. Answers carry an ``output_content`` id, so
in simulation the next turn hits the blocks its previous answer filled.

KV effect: per-session prefix reuse that grows with every turn (history is
most of each prompt), plus the shared system prompt across sessions. Reuse is
lost when a session's blocks are evicted during its think time.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kvlab.workload.generators._common import CommonParams, in_run_order, nonzero, seg
from kvlab.workload.records import Request, Segment


@dataclass(frozen=True)
class SessionsParams(CommonParams):
    sessions: int = 32
    turns: int = 6
    rate_per_s: float = 0.5
    think_time_s: float = 10.0
    system_tokens: int = 512
    user_tokens: int = 200
    output_tokens: int = 300

    POSITIVE = ("sessions", "turns", "output_tokens")
    PER_SESSION = ("turns",)


def conversation(
    *,
    name: str,
    session: str,
    prefix: tuple[Segment, ...],
    user_lens: list[int],
    output_lens: list[int],
    start_s: float,
    thinks: np.ndarray,
    history: bool,
    cls: str,
) -> list[Request]:
    """The requests of one conversation (history re-sent when ``history``)."""
    out: list[Request] = []
    past: list[Segment] = []
    turns = len(user_lens)
    for t in range(turns):
        base = f"{name}/{session}/t{t}"
        resent = history and t < turns - 1
        user = seg("user", user_lens[t], f"{base}/user", "context" if resent else "ephemeral")
        answer_id = f"{base}/answer" if resent else None
        out.append(
            Request(
                request_id=f"{session}-t{t}",
                segments=nonzero((*prefix, *past, user)),
                output_tokens=output_lens[t],
                arrival_s=float(start_s) if t == 0 else None,
                think_time_s=None if t == 0 else float(thinks[t - 1]),
                session_id=session,
                turn=t,
                cls=cls,
                output_content_id=answer_id,
            )
        )
        if history:
            past += [user, seg("assistant", output_lens[t], f"{base}/answer", "generation")]
    return out


def build(p: SessionsParams, rng: np.random.Generator) -> tuple[Request, ...]:
    system = seg("system", p.system_tokens, "sessions/system", "system")
    starts = p.starts(rng)
    reqs: list[Request] = []
    for i in range(p.sessions):
        reqs += conversation(
            name="sessions",
            session=f"s{i}",
            prefix=(system,),
            user_lens=p.lengths(rng, p.user_tokens, p.turns),
            output_lens=p.lengths(rng, p.output_tokens, p.turns),
            start_s=float(starts[i]),
            thinks=p.thinks(rng, p.turns - 1),
            history=True,
            cls="chat",
        )
    return in_run_order(reqs)
