"""RunResult: what every backend (simulator, live server, transformers) returns.

The package holds one noun per module:

* :mod:`kvlab.results.records`: :class:`RequestRecord` (the life of one
  request), the request statuses and the ``requests.jsonl`` encoding;
* :mod:`kvlab.results.summary`: summaries of records (latency distributions,
  token counts, prefix-cache figures), per group too;
* :mod:`kvlab.results.run_dir`: :class:`RunResult` and its run directory
  (save, load, atomic writes, incremental record writing).

Every name used from ``kvlab.results`` is re-exported here.
"""

from __future__ import annotations

from kvlab.results.records import (
    COUNT_FIELDS,
    MISS_CAUSES,
    STATUS_FAILED,
    STATUS_OK,
    STATUS_REJECTED,
    STATUS_UNFINISHED,
    RequestRecord,
    records_to_jsonl,
)
from kvlab.results.run_dir import (
    PARTIAL_STATUSES,
    RecordWriter,
    RunResult,
    atomic_write_text,
    check_summary,
    timeseries_from_csv,
    timeseries_to_csv,
)
from kvlab.results.summary import (
    count_errors,
    dist,
    group_summaries,
    prefix_queried,
    summarize,
    summary_with_groups,
    with_counters,
)

__all__ = [
    "COUNT_FIELDS",
    "MISS_CAUSES",
    "PARTIAL_STATUSES",
    "STATUS_FAILED",
    "STATUS_OK",
    "STATUS_REJECTED",
    "STATUS_UNFINISHED",
    "RecordWriter",
    "RequestRecord",
    "RunResult",
    "atomic_write_text",
    "check_summary",
    "count_errors",
    "dist",
    "group_summaries",
    "prefix_queried",
    "records_to_jsonl",
    "summarize",
    "summary_with_groups",
    "timeseries_from_csv",
    "timeseries_to_csv",
    "with_counters",
]
