"""The hf backend's accelerator-memory path: CUDA peaks per step and per request.

No GPU is available where these tests run: the CUDA readings come from a stand-in for
``torch.cuda`` with scripted peaks, while the model itself runs on the CPU. What is
checked is the bookkeeping (reset after every step, a request's peak over the steps it
was in the batch, the run's peaks, the time series) and the CPU run's "not measured".
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

pytestmark = [pytest.mark.hf]


class FakeCuda:
    """``torch.cuda``'s peak-memory functions, returning scripted peaks per reading."""

    def __init__(self, allocated: list[int], reserved: list[int]) -> None:
        self.allocated, self.reserved = list(allocated), list(reserved)
        self.calls: list[tuple[str, Any]] = []

    def reset_peak_memory_stats(self, device: Any = None) -> None:
        self.calls.append(("reset", device))

    def synchronize(self, device: Any = None) -> None:
        self.calls.append(("sync", device))

    def max_memory_allocated(self, device: Any = None) -> int:
        self.calls.append(("allocated", device))
        return self.allocated.pop(0)

    def max_memory_reserved(self, device: Any = None) -> int:
        self.calls.append(("reserved", device))
        return self.reserved.pop(0)


@pytest.fixture(scope="module")
def backend(tiny_model_dir: Path) -> Any:
    from kvlab.backends.hf import HfBackend, HfConfig

    return HfBackend(HfConfig(model_dir=str(tiny_model_dir), max_batch_size=1))


def _requests() -> list[Any]:
    from kvlab.backends.hf import GenRequest

    return [GenRequest("a", (10, 11, 12), 3), GenRequest("b", (13, 14), 3)]


def test_on_the_cpu_nothing_is_measured_and_the_run_says_why(backend: Any) -> None:
    from kvlab.backends.hf import CPU_MEMORY_NOTE

    assert backend.memory is None
    res = backend.run(_requests())
    dm = res.provenance["device_memory"]
    assert dm["device"] == "cpu" and dm["measured"] is False and dm["note"] == CPU_MEMORY_NOTE
    assert dm["peak_allocated_bytes"] is None and dm["peak_reserved_bytes"] is None
    none = {"peak_allocated_bytes": None, "peak_reserved_bytes": None}
    assert dm["by_request"] == {"a": none, "b": none}
    assert "device_allocated_peak_bytes" not in res.timeseries
    assert res.config["device"] == "cpu"


def test_cuda_peaks_are_reset_every_step_and_kept_per_request(
    backend: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One request at a time, 3 tokens each: a's steps are readings 1-3 (prefill, two
    decodes), b's readings 4-6. A request's peak is the largest of its steps."""
    from kvlab.backends.hf import CUDA_MEMORY_NOTE, DeviceMemory

    cuda = FakeCuda(allocated=[10, 50, 20, 5, 7, 6], reserved=[100, 100, 300, 50, 50, 60])
    monkeypatch.setattr(backend, "memory", DeviceMemory(SimpleNamespace(cuda=cuda), "cuda:0"))
    res = backend.run(_requests())
    dm = res.provenance["device_memory"]
    assert dm["measured"] is True and dm["note"] == CUDA_MEMORY_NOTE
    assert dm["by_request"] == {
        "a": {"peak_allocated_bytes": 50, "peak_reserved_bytes": 300},
        "b": {"peak_allocated_bytes": 7, "peak_reserved_bytes": 60},
    }
    assert (dm["peak_allocated_bytes"], dm["peak_reserved_bytes"]) == (50, 300)
    assert res.timeseries["device_allocated_peak_bytes"] == [10, 50, 20, 5, 7, 6]
    assert res.timeseries["device_reserved_peak_bytes"] == [100, 100, 300, 50, 50, 60]
    kinds = [k for k, _ in cuda.calls]
    # reset before the first step, then per step: sync, read both peaks, reset
    assert kinds == ["reset"] + ["sync", "allocated", "reserved", "reset"] * 6
    assert {d for _, d in cuda.calls} == {"cuda:0"}
    assert not cuda.allocated  # every scripted reading was used: one per step


def test_batched_requests_share_the_peaks_of_the_steps_they_shared(
    backend: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both requests in one batch (prefill together, two decodes): each gets the peak of
    all three steps."""
    from kvlab.backends.hf import DeviceMemory

    cuda = FakeCuda(allocated=[40, 90, 30], reserved=[128, 256, 256])
    monkeypatch.setattr(backend, "memory", DeviceMemory(SimpleNamespace(cuda=cuda), "cuda:1"))
    res = backend.run(_requests(), max_batch_size=2)
    peaks = {"peak_allocated_bytes": 90, "peak_reserved_bytes": 256}
    assert res.provenance["device_memory"]["by_request"] == {"a": peaks, "b": peaks}


def test_a_cuda_device_without_cuda_is_one_clear_error(tiny_model_dir: Path) -> None:
    import torch

    from kvlab.backends.hf import HfBackend, HfConfig
    from kvlab.errors import ConfigError

    if torch.cuda.is_available():
        pytest.skip("this host has a CUDA device")
    with pytest.raises(ConfigError, match="sees no CUDA device here"):
        HfBackend(HfConfig(model_dir=str(tiny_model_dir), device="cuda"))


@pytest.mark.parametrize("bad", ["gpu", "cuda:", "cuda:x", "CPU", "cuda:1234", ""])
def test_device_names_are_checked(bad: str) -> None:
    from kvlab.backends.hf import HfConfig
    from kvlab.errors import ConfigError

    with pytest.raises(ConfigError, match="device must be cpu, cuda or cuda:N"):
        HfConfig(model_dir="x", device=bad)
