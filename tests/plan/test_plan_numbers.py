"""Float options of ``kvlab plan`` are checked where they enter: NaN, infinity, a negative
or an absurdly large value is one ``error:`` line naming the option (exit 2)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

Cli = Callable[[list[str]], Any]

CUSTOM = ["--gpu-memory-gb", "80"]
BAD = [
    (["--gpu-memory-gb", "nan"], "--gpu-memory-gb"),
    (["--gpu-memory-gb", "inf"], "--gpu-memory-gb"),
    (["--gpu-memory-gb", "1e308"], "--gpu-memory-gb"),
    ([*CUSTOM, "--gpu-bw-gbps", "nan"], "--gpu-bw-gbps"),
    ([*CUSTOM, "--gpu-bw-gbps", "inf"], "--gpu-bw-gbps"),
    ([*CUSTOM, "--gpu-tflops", "inf"], "--gpu-tflops"),
    ([*CUSTOM, "--gpu-tflops", "nan"], "--gpu-tflops"),
    ([*CUSTOM, "--gpu-tflops", "-1"], "--gpu-tflops"),
    (["--offload-gb", "nan"], "--offload-gb"),
    (["--offload-gb", "inf"], "--offload-gb"),
    (["--offload-gb", "1e300"], "--offload-gb"),
    (["--gpu-memory-utilization", "nan"], "utilization"),
]


@pytest.mark.parametrize(("args", "option"), BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_float_option_is_one_line(cli: Cli, args: list[str], option: str) -> None:
    res = cli(["plan", *args, "--json"])
    assert res.code == 2, res.err + res.out
    assert option in res.one_line_error()


def test_custom_gpu_rejects_non_finite() -> None:
    from kvlab.errors import ConfigError
    from kvlab.hardware import custom_gpu

    for kwargs in (
        {"memory_gb": float("nan")},
        {"memory_gb": 80, "mem_bw_gbps": float("inf")},
        {"memory_gb": 80, "bf16_tflops": float("nan")},
        {"memory_gb": 80, "fp8_tflops": float("inf")},
        {"memory_gb": 80, "host_link_gbps": float("nan")},
    ):
        with pytest.raises(ConfigError):
            custom_gpu(**kwargs)  # type: ignore[arg-type]
