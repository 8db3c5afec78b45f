"""kvlab.plan() called from Python: a NaN, infinite, negative or fractional argument is a
ConfigError naming the argument, before any work (never a crash later)."""

from __future__ import annotations

import math

import pytest

import kvlab
from kvlab.errors import ConfigError, KvlabError


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"offload_gb": math.nan}, "offload_gb"),
        ({"offload_gb": math.inf}, "offload_gb"),
        ({"offload_gb": 1e300}, "offload_gb"),
        ({"gpu_memory_utilization": math.nan}, "gpu_memory_utilization"),
        ({"gpu_memory_utilization": -math.inf}, "gpu_memory_utilization"),
        ({"concurrency": 1.5}, "concurrency"),
        ({"concurrency": math.nan}, "concurrency"),
        ({"context_tokens": 1e30}, "context_tokens"),
        ({"tp": True}, "tp"),
        ({"block_size": "16"}, "block_size"),
        ({"kv_cache_memory_bytes": math.inf}, "kv_cache_memory_bytes"),
        ({"max_num_seqs": 2.5}, "max_num_seqs"),
        ({"overhead_bytes": -1}, "overhead_bytes"),
        ({"overhead_bytes": math.nan}, "overhead_bytes"),
    ],
)
def test_a_bad_argument_is_named(kwargs: dict, name: str) -> None:
    with pytest.raises(ConfigError, match=name) as e:
        kvlab.plan("llama-3.1-8b", "h100", **kwargs)
    assert isinstance(e.value, KvlabError)


def test_good_arguments_still_plan() -> None:
    r = kvlab.plan("llama-3.1-8b", "h100", offload_gb=8.0, concurrency=4, overhead_bytes=0)
    assert r.capacity.num_gpu_blocks > 0
