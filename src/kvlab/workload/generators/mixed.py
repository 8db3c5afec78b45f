"""``mixed``: short and long requests interleaved.

``sessions`` independent requests (no sessions) arrive open loop; a fraction
``long_fraction`` of them are long (``long_prompt_tokens`` prompt,
``long_output_tokens`` output), the rest short. Classes ``short`` and
``long``. Prompts are unique except an optional shared system prompt
(``system_tokens``, default 0).

KV effect: no reuse by default, so prefix caching cannot help; long prompts
occupy many blocks and long prefills delay the short requests behind them
(head-of-line blocking shows as short-class TTFT).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kvlab.workload.generators._common import CommonParams, in_run_order, nonzero, seg
from kvlab.workload.records import Request


@dataclass(frozen=True)
class MixedParams(CommonParams):
    sessions: int = 200
    rate_per_s: float = 4.0
    long_fraction: float = 0.1
    system_tokens: int = 0
    short_prompt_tokens: int = 256
    long_prompt_tokens: int = 8000
    short_output_tokens: int = 128
    long_output_tokens: int = 512

    POSITIVE = ("sessions", "short_prompt_tokens", "long_prompt_tokens")


def build(p: MixedParams, rng: np.random.Generator) -> tuple[Request, ...]:
    system = seg("system", p.system_tokens, "mixed/system", "system")
    starts = p.starts(rng)
    is_long = rng.random(p.sessions) < min(1.0, p.long_fraction)
    short_in = p.lengths(rng, p.short_prompt_tokens, p.sessions)
    long_in = p.lengths(rng, p.long_prompt_tokens, p.sessions)
    short_out = p.lengths(rng, p.short_output_tokens, p.sessions)
    long_out = p.lengths(rng, p.long_output_tokens, p.sessions)
    reqs = []
    for i in range(p.sessions):
        lng = bool(is_long[i])
        reqs.append(
            Request(
                request_id=f"r{i}",
                segments=nonzero(
                    (
                        system,
                        seg("user", long_in[i] if lng else short_in[i], f"mixed/r{i}", "ephemeral"),
                    )
                ),
                output_tokens=long_out[i] if lng else short_out[i],
                arrival_s=float(starts[i]),
                cls="long" if lng else "short",
            )
        )
    return in_run_order(reqs)
