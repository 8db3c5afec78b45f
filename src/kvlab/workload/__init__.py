"""Workloads: request records, generators, trace importers, deterministic content."""

from kvlab.workload.records import RETENTION_CLASSES, Request, Segment, Workload

__all__ = ["RETENTION_CLASSES", "Request", "Segment", "Workload"]
