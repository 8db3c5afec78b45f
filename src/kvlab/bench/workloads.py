"""Small workloads for the bench experiments, as ordinary kvlab Workloads.

Every request arrives at t=0 (the experiment's concurrency cap shapes the
load), or follows the previous one of its session (``sequential``). Content
ids are unique per request unless a prefix is shared on purpose, so
prefix-cache hits happen only where an experiment wants them.
"""

from __future__ import annotations

from kvlab.workload.records import Request, Segment, Workload


def uniform(
    name: str,
    num_requests: int,
    prompt_tokens: int,
    output_tokens: int,
    *,
    cls: str | None = None,
    sequential: bool = False,
) -> Workload:
    """``num_requests`` requests of ``prompt_tokens`` unique tokens and ``output_tokens``.

    ``sequential``: one session whose requests follow each other with zero
    think time (each is sent when the previous one finished), so no request
    waits in a queue and its TTFT is its own.
    """
    reqs = tuple(
        Request(
            request_id=f"{name}-{i}",
            segments=(Segment("user", prompt_tokens, f"{name}-u{i}"),),
            output_tokens=output_tokens,
            arrival_s=0.0 if (i == 0 or not sequential) else None,
            think_time_s=0.0 if (i > 0 and sequential) else None,
            session_id=name if sequential else None,
            turn=i if sequential else 0,
            cls=cls,
        )
        for i in range(num_requests)
    )
    return Workload(requests=reqs, name=name)


def mixed(
    name: str,
    num_short: int,
    short: tuple[int, int],
    num_long: int,
    long: tuple[int, int],
) -> Workload:
    """Long requests (class ``long``) listed first, then short ones (class ``short``).

    ``short`` and ``long`` are (prompt tokens, output tokens).
    """
    longs = uniform(f"{name}-long", num_long, long[0], long[1], cls="long").requests
    shorts = uniform(f"{name}-short", num_short, short[0], short[1], cls="short").requests
    return Workload(requests=longs + shorts, name=name)


def shared_prefix(
    name: str,
    num_requests: int,
    prefix_tokens: int,
    suffix_tokens: int,
    output_tokens: int,
    *,
    shared: bool,
) -> Workload:
    """Requests of a system prefix plus a unique suffix; the prefix is one
    content id for all (``shared``) or unique per request."""
    reqs = []
    for i in range(num_requests):
        prefix_id = f"{name}-system" if shared else f"{name}-system{i}"
        reqs.append(
            Request(
                request_id=f"{name}-{i}",
                segments=(
                    Segment("system", prefix_tokens, prefix_id, retention="system"),
                    Segment("user", suffix_tokens, f"{name}-u{i}"),
                ),
                output_tokens=output_tokens,
                arrival_s=0.0,
                cls="shared" if shared else "unique",
            )
        )
    return Workload(requests=tuple(reqs), name=name)


__all__ = ["mixed", "shared_prefix", "uniform"]
