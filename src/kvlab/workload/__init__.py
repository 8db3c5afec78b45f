"""Workloads: request records, generators, trace importers, deterministic content."""

from kvlab.workload.generators import SHAPES, generate
from kvlab.workload.io import read_workload, write_workload
from kvlab.workload.records import RETENTION_CLASSES, Request, Segment, Workload
from kvlab.workload.stats import prefix_reuse_bound, workload_stats

__all__ = [
    "RETENTION_CLASSES",
    "SHAPES",
    "Request",
    "Segment",
    "Workload",
    "generate",
    "prefix_reuse_bound",
    "read_workload",
    "workload_stats",
    "write_workload",
]
