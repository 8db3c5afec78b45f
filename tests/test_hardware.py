"""The GPU catalog: lookups, aliases, errors, custom GPUs."""

from __future__ import annotations

import dataclasses

import pytest

from kvlab.errors import ConfigError
from kvlab.hardware import GIB, GpuSpec, custom_gpu, get_gpu, list_gpus

REQUIRED = {
    "h100-sxm", "h100-pcie", "h200", "a100-40gb-sxm", "a100-40gb-pcie", "a100-80gb-sxm",
    "a100-80gb-pcie", "l40s", "l4", "rtx-4090", "b200", "b300", "gb200", "gb300", "dgx-spark",
}  # fmt: skip


def test_catalog_has_the_required_gpus() -> None:
    assert {g.name for g in list_gpus()} >= REQUIRED


@pytest.mark.parametrize(
    ("alias", "name"),
    [
        ("h100", "h100-sxm"),
        ("H100-SXM", "h100-sxm"),
        ("h100_sxm", "h100-sxm"),
        ("a100-80g", "a100-80gb-sxm"),
        ("a100", "a100-80gb-sxm"),
        ("A100-40G", "a100-40gb-sxm"),
        ("4090", "rtx-4090"),
        ("gb10", "dgx-spark"),
        ("H200", "h200"),
    ],
)
def test_aliases_are_case_insensitive(alias: str, name: str) -> None:
    assert get_gpu(alias).name == name


def test_known_facts() -> None:
    h100 = get_gpu("h100-sxm")
    assert h100.memory_bytes == 81559 * 2**20  # nvidia-smi total
    assert h100.mem_bw_bytes_per_s == 3.35e12
    assert h100.bf16_flops == 989e12 and h100.fp8_flops == 1978e12
    assert h100.host_link_h2d_bytes_per_s == h100.host_link_d2h_bytes_per_s == 64e9
    assert get_gpu("a100-40gb-sxm").mem_bw_bytes_per_s == 1.555e12
    assert get_gpu("a100").fp8_flops is None
    assert get_gpu("l40s").memory_bytes == 46068 * 2**20
    assert get_gpu("rtx-4090").mem_bw_bytes_per_s == 1.008e12
    assert get_gpu("gb200").host_link_h2d_bytes_per_s == 450e9


def test_dgx_spark_is_unified_with_no_host_tier() -> None:
    spark = get_gpu("dgx-spark")
    assert spark.unified_memory and not spark.has_host_tier
    assert spark.memory_bytes == 128 * GIB
    assert spark.mem_bw_bytes_per_s == 273e9
    assert get_gpu("h100").has_host_tier


def test_every_gpu_is_sane() -> None:
    for g in list_gpus():
        assert g.memory_bytes > 8 * GIB
        assert 1e11 < g.mem_bw_bytes_per_s < 1e13
        assert g.fp8_flops is None or g.fp8_flops >= g.bf16_flops
        assert g.source
        assert g.to_dict()["name"] == g.name


def test_unknown_gpu_lists_close_matches() -> None:
    with pytest.raises(ConfigError, match=r"unknown GPU 'h100-sx'; did you mean .*h100-sxm"):
        get_gpu("h100-sx")
    with pytest.raises(ConfigError, match="known: h100-sxm"):
        get_gpu("tpu-v5e")


def test_custom_gpu_units() -> None:
    g = custom_gpu(memory_gb=48, mem_bw_gbps=960, bf16_tflops=150, host_link_gbps=25)
    assert g.memory_bytes == 48 * GIB
    assert g.mem_bw_bytes_per_s == 960e9 and g.bf16_flops == 150e12
    assert g.host_link_h2d_bytes_per_s == 25e9
    assert get_gpu(g) is g
    unified = custom_gpu(memory_gb=64, unified_memory=True)
    assert not unified.has_host_tier


@pytest.mark.parametrize("bad", [0, -1])
def test_custom_gpu_rejects_bad_memory(bad: float) -> None:
    with pytest.raises(ConfigError):
        custom_gpu(memory_gb=bad)


def test_gpuspec_is_frozen() -> None:
    g = get_gpu("l4")
    assert isinstance(g, GpuSpec)
    with pytest.raises(dataclasses.FrozenInstanceError):
        g.memory_bytes = 1  # type: ignore[misc]
