"""Parse the KV-capacity lines vLLM prints at startup.

vLLM v1 (``vllm/v1/core/kv_cache_utils.py``, ``update_kv_cache_capacity``) logs
once per engine::

    <DEV> KV cache size: 2,097,152 tokens, Maximum concurrency for 256 tokens per request: 8192.00x

where ``<DEV>`` is ``GPU`` on CUDA and ``CPU`` on the CPU build, the token count
has thousands separators, and the concurrency is printed with two decimals.
The CPU worker (``vllm/v1/worker/cpu_worker.py``) also logs the KV memory it
was told to use::

    Explicitly set (1.0/9.59) GiB for KV cache on node 0.

and ``--num-gpu-blocks-override`` is logged as ``Overriding num_gpu_blocks=N
with num_gpu_blocks_override=M``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_CAPACITY = re.compile(
    r"(?P<device>[A-Z][A-Za-z0-9 +]*?) KV cache size: (?P<tokens>[\d,]+) tokens, "
    r"Maximum concurrency for (?P<len>[\d,]+) tokens per request: (?P<conc>[\d.]+)x"
)
_EXPLICIT = re.compile(r"Explicitly set \((?P<gib>[\d.]+)/(?P<total>[\d.]+)\) GiB for KV cache")
_OVERRIDE = re.compile(
    r"Overriding num_gpu_blocks=(?P<old>\d+) with num_gpu_blocks_override=(?P<new>\d+)"
)


@dataclass(frozen=True, slots=True)
class KvCapacityLog:
    """What vLLM logged about its KV capacity.

    ``max_concurrency_text`` is the concurrency exactly as printed (two
    decimals); compare against ``f"{x:.2f}"`` of a computed value.
    """

    device: str
    kv_cache_tokens: int
    max_model_len: int
    max_concurrency: float
    max_concurrency_text: str
    explicit_kv_gib: float | None = None
    num_blocks_override: int | None = None


def parse_kv_capacity(log_text: str) -> KvCapacityLog | None:
    """The first capacity line of ``log_text`` (None if the server has not logged it)."""
    m = _CAPACITY.search(log_text)
    if m is None:
        return None
    explicit = _EXPLICIT.search(log_text)
    override = _OVERRIDE.search(log_text)
    device = m.group("device").strip()
    return KvCapacityLog(
        device=device,
        kv_cache_tokens=int(m.group("tokens").replace(",", "")),
        max_model_len=int(m.group("len").replace(",", "")),
        max_concurrency=float(m.group("conc")),
        max_concurrency_text=m.group("conc"),
        explicit_kv_gib=None if explicit is None else float(explicit.group("gib")),
        num_blocks_override=None if override is None else int(override.group("new")),
    )


__all__ = ["KvCapacityLog", "parse_kv_capacity"]
