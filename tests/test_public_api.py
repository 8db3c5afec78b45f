"""The public API is small and pinned: changing it is a deliberate act."""

from __future__ import annotations

import pytest

import kvlab

PINNED = {
    "BackendError",
    "CapacityError",
    "ConfigError",
    "DependencyMissing",
    "GpuSpec",
    "KvlabError",
    "LayerSpec",
    "ModelSpec",
    "PlanResult",
    "Request",
    "RequestRecord",
    "RunResult",
    "Segment",
    "SimConfig",
    "Workload",
    "WorkloadError",
    "__version__",
    "cache_curve",
    "from_hf_config",
    "generate",
    "get_gpu",
    "get_model",
    "kv_bytes_per_token",
    "list_gpus",
    "list_models",
    "load_workload",
    "plan",
    "read_workload",
    "sequence_bytes",
    "simulate",
    "weights_bytes",
    "write_workload",
}


def test_all_is_pinned() -> None:
    assert set(kvlab.__all__) == PINNED


def test_every_public_name_resolves() -> None:
    """Each public name is the object its module defines (a lazy name is the module's own,
    not a stand-in), callable, and kvlab's; a name outside the API is an AttributeError."""
    import importlib
    import re

    lazy: dict[str, str] = kvlab._LAZY
    for name in sorted(set(kvlab.__all__) - {"__version__"}):
        obj = getattr(kvlab, name)
        if name in lazy:
            assert obj is getattr(importlib.import_module(lazy[name]), name), name
        assert callable(obj), name
        assert obj.__module__.startswith("kvlab."), (name, obj.__module__)
    assert re.fullmatch(r"\d+\.\d+\.\d+", kvlab.__version__)
    with pytest.raises(AttributeError):
        kvlab.no_such_name  # noqa: B018


def test_the_docstring_example_runs(tmp_path: object) -> None:
    spec = kvlab.get_model("meta-llama/Llama-3.1-8B")
    p = kvlab.plan(spec, "h100-sxm", context_tokens=131072).to_dict()
    assert p["kv_bytes_per_token"] == 131072
    assert p["sequence_bytes"] == 17179869184
    wl = kvlab.generate("chat", seed=1, sessions=5)
    run = kvlab.simulate(wl, kvlab.SimConfig(model="llama-3.1-8b", gpu="h100"))
    assert run.summary["num_completed"] == 5
