"""Bench experiments: measure KV, memory, throughput and latency on a real backend.

Each experiment is a module with ``run(target, out_dir, params, progress)``;
:data:`EXPERIMENTS` maps the CLI name to the module name.
"""

from __future__ import annotations

EXPERIMENTS: dict[str, str] = {
    "concurrency": "kvlab.bench.concurrency",
    "seqlen": "kvlab.bench.seqlen",
    "mixed": "kvlab.bench.mixed",
    "prefix": "kvlab.bench.prefix",
}

__all__ = ["EXPERIMENTS"]
