"""A fitted step cost checked against the server's own step timings.

vLLM times every request inside its engine (``vllm:request_prefill_time_seconds``:
from being scheduled to the first token; ``vllm:request_time_per_output_token_seconds``:
its decode time over its output tokens after the first) and counts its iterations
(``vllm:iteration_tokens_total``). A client sees none of this directly, so these are an
independent measurement of the same steps the fit models. Per sweep part
(:mod:`kvlab.calibrate.sweep` saves the histogram deltas with each run), the check
compares the server's mean with the fit's prediction for the same requests and with
what the client measured:

* **prefill** (parts whose requests each ran alone): the engine's mean prefill time
  against the fit's mean prefill step (without the request overhead), and the client's
  mean time to first token minus the engine's prefill and queue times (what the fit
  calls the request overhead) against ``request_overhead_s``.
* **decode**: the engine's mean time per output token against the fit's mean decode
  step over the part's decode observations (the engine's figure also holds steps shared
  with prefills, which the client-side observations leave out).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def server_check(
    cal: Any, obs: Sequence[Any], timings: Mapping[str, float], part: str
) -> list[dict[str, Any]]:
    """Rows ``{part, quantity, n, server_s, fit_s, client_s, error}`` (``error``: the fit
    relative to the server, None when the server has no figure) for one sweep part's
    observations ``obs`` and the server's timing deltas ``timings``."""
    rows: list[dict[str, Any]] = []

    def add(quantity: str, n: int, server: float | None, fitted: float, client: float) -> None:
        rows.append(
            {
                "part": part,
                "quantity": quantity,
                "n": n,
                "server_s": server,
                "fit_s": fitted,
                "client_s": client,
                "error": None if not server else (fitted - server) / server,
            }
        )

    pre = [o for o in obs if o.kind == "prefill"]
    count = timings.get("prefill_count", 0.0)
    if pre and count and len(pre) == round(count):
        c = cal.coefficients
        server = timings["prefill_sum_s"] / count
        steps = [cal.predict_obs(o) - c["request_overhead_s"] for o in pre]
        ttft = sum(o.seconds for o in pre) / len(pre)
        add("prefill step", len(pre), server, sum(steps) / len(steps), ttft)
        queue = timings.get("queue_sum_s", 0.0) / max(timings.get("queue_count", 0.0), 1.0)
        add("request overhead", len(pre), ttft - server - queue, c["request_overhead_s"], ttft)
    dec = [o for o in obs if o.kind == "decode"]
    if dec and timings.get("tpot_count"):
        server = timings["tpot_sum_s"] / timings["tpot_count"]
        fitted = sum(cal.predict_obs(o) for o in dec) / len(dec)
        add("decode step", len(dec), server, fitted, sum(o.seconds for o in dec) / len(dec))
    return rows


def check_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """The rows as a Markdown table (milliseconds)."""

    def ms(x: float | None) -> str:
        return "-" if x is None else f"{x * 1e3:.2f}"

    out = [
        "| part | quantity | n | vLLM's own (ms) | fit (ms) | client (ms) | fit vs vLLM |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        err = "-" if r["error"] is None else f"{r['error'] * 100:+.1f}%"
        out.append(
            f"| {r['part']} | {r['quantity']} | {r['n']} | {ms(r['server_s'])} | "
            f"{ms(r['fit_s'])} | {ms(r['client_s'])} | {err} |"
        )
    return "\n".join(out)


__all__ = ["check_table", "server_check"]
