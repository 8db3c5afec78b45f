"""GpuSpec: the accelerator facts kvlab plans against, and a small catalog.

Units: bytes, bytes per second, FLOP per second (dense, no sparsity).

``memory_bytes`` is the device memory the CUDA driver reports as the total
(``nvidia-smi``'s ``memory.total`` in MiB, which is also torch's
``get_device_properties().total_memory``). vLLM multiplies the total that
``torch.cuda.mem_get_info()`` returns by ``--gpu-memory-utilization``; on some
boards that total is a few hundred MiB lower (vLLM logs about 79.2 GiB on an
H100 80GB whose nvidia-smi total is 81,559 MiB = 79.6 GiB). Plan with
``custom_gpu`` or ``--gpu-memory-gb`` when you know your board's figure, or
bypass the estimate with ``--kv-cache-memory-bytes``.

Sources: the Apache-2.0 system files of NVIDIA's AIConfigurator
(``gpu_systems/*.yaml``: memory, HBM bandwidth, dense TFLOPS, PCIe/NVLink per
direction), NVIDIA datasheets, and ``nvidia-smi`` totals as printed on real
machines. Host-link latency (10 us) is the AIConfigurator files'
``p2p_latency``, an unofficial observed figure.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass, field

from kvlab.errors import ConfigError

MIB = 1 << 20
GIB = 1 << 30
GB = 10**9
TFLOPS = 10**12

#: Host-link latency used for every catalog GPU (AIConfigurator ``p2p_latency``).
HOST_LINK_LATENCY_S = 10e-6


@dataclass(frozen=True, slots=True)
class GpuSpec:
    """One accelerator as far as KV planning is concerned.

    Invariants: ``memory_bytes > 0``, ``mem_bw_bytes_per_s > 0``,
    ``bf16_flops > 0``. ``fp8_flops`` is None where the chip has no FP8 tensor
    cores (A100). ``host_link_*`` is the per-direction bandwidth between GPU and
    host memory (PCIe or NVLink-C2C); None when ``unified_memory`` is True,
    because then CPU and GPU share one pool and there is no separate host tier.
    """

    name: str
    description: str
    memory_bytes: int
    mem_bw_bytes_per_s: float
    bf16_flops: float
    fp8_flops: float | None
    host_link_h2d_bytes_per_s: float | None
    host_link_d2h_bytes_per_s: float | None
    host_link_latency_s: float = HOST_LINK_LATENCY_S
    unified_memory: bool = False
    sm_version: int = 0
    aliases: tuple[str, ...] = field(default=())
    notes: str = ""
    source: str = ""

    def __post_init__(self) -> None:
        if self.memory_bytes <= 0:
            raise ConfigError(f"GPU memory must be > 0 bytes, got {self.memory_bytes}")
        if self.mem_bw_bytes_per_s <= 0:
            raise ConfigError(f"GPU memory bandwidth must be > 0, got {self.mem_bw_bytes_per_s}")
        if self.bf16_flops <= 0:
            raise ConfigError(f"GPU bf16 FLOP/s must be > 0, got {self.bf16_flops}")

    @property
    def memory_gib(self) -> float:
        return self.memory_bytes / GIB

    @property
    def has_host_tier(self) -> bool:
        """Whether a separate host memory tier exists behind a link."""
        return not self.unified_memory and self.host_link_h2d_bytes_per_s is not None

    def to_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "description": self.description,
            "memory_bytes": self.memory_bytes,
            "mem_bw_bytes_per_s": self.mem_bw_bytes_per_s,
            "bf16_flops": self.bf16_flops,
            "fp8_flops": self.fp8_flops,
            "host_link_h2d_bytes_per_s": self.host_link_h2d_bytes_per_s,
            "host_link_d2h_bytes_per_s": self.host_link_d2h_bytes_per_s,
            "host_link_latency_s": self.host_link_latency_s,
            "unified_memory": self.unified_memory,
            "sm_version": self.sm_version,
            "aliases": list(self.aliases),
            "notes": self.notes,
            "source": self.source,
        }


def _pcie(gen: int) -> float:
    """Per-direction x16 bandwidth: Gen4 32 GB/s, Gen5 64 GB/s, Gen6 128 GB/s."""
    return {4: 32 * GB, 5: 64 * GB, 6: 128 * GB}[gen]


_AICONF = "AIConfigurator gpu_systems/{} (Apache-2.0)"

#: NVLink-C2C between Grace and a Blackwell GPU: 900 GB/s total, 450 GB/s per
#: direction (REFERENCE section 4).
_C2C = 450 * GB

_CATALOG: tuple[GpuSpec, ...] = (
    GpuSpec(
        name="h100-sxm",
        sm_version=90,
        description="NVIDIA H100 SXM5 80GB HBM3",
        memory_bytes=81559 * MIB,  # nvidia-smi "81559MiB"
        mem_bw_bytes_per_s=3350 * GB,
        bf16_flops=989 * TFLOPS,
        fp8_flops=1978 * TFLOPS,
        host_link_h2d_bytes_per_s=_pcie(5),
        host_link_d2h_bytes_per_s=_pcie(5),
        aliases=("h100", "h100-80g", "h100-80gb", "h100-sxm5", "h100-sxm-80gb"),
        notes="PCIe Gen5 x16 to the host (50-55 GB/s achievable).",
        source=_AICONF.format("h100_sxm.yaml") + "; nvidia-smi total",
    ),
    GpuSpec(
        name="h100-pcie",
        sm_version=90,
        description="NVIDIA H100 PCIe 80GB",
        memory_bytes=81559 * MIB,  # nvidia-smi "81559MiB"
        mem_bw_bytes_per_s=2000 * GB,
        bf16_flops=756.5 * TFLOPS,
        fp8_flops=1513 * TFLOPS,
        host_link_h2d_bytes_per_s=_pcie(5),
        host_link_d2h_bytes_per_s=_pcie(5),
        aliases=("h100-pcie-80gb",),
        source=_AICONF.format("h100_pcie.yaml") + "; nvidia-smi total",
    ),
    GpuSpec(
        name="h200",
        sm_version=90,
        description="NVIDIA H200 SXM 141GB HBM3e",
        memory_bytes=143771 * MIB,  # nvidia-smi "143771MiB"
        mem_bw_bytes_per_s=4800 * GB,
        bf16_flops=989 * TFLOPS,
        fp8_flops=1978 * TFLOPS,
        host_link_h2d_bytes_per_s=_pcie(5),
        host_link_d2h_bytes_per_s=_pcie(5),
        aliases=("h200-sxm", "h200-141g", "h200-141gb"),
        source=_AICONF.format("h200_sxm.yaml") + "; nvidia-smi total",
    ),
    GpuSpec(
        name="a100-80gb-sxm",
        sm_version=80,
        description="NVIDIA A100 SXM4 80GB",
        memory_bytes=81920 * MIB,  # nvidia-smi "81920MiB"
        mem_bw_bytes_per_s=2039 * GB,
        bf16_flops=312 * TFLOPS,
        fp8_flops=None,
        host_link_h2d_bytes_per_s=_pcie(4),
        host_link_d2h_bytes_per_s=_pcie(4),
        aliases=("a100", "a100-80g", "a100-80gb", "a100-sxm", "a100-sxm4-80gb"),
        notes="No FP8 tensor cores: fp8 KV is stored, not computed, in fp8.",
        source=_AICONF.format("a100_sxm.yaml") + "; nvidia-smi total",
    ),
    GpuSpec(
        name="a100-80gb-pcie",
        sm_version=80,
        description="NVIDIA A100 PCIe 80GB",
        memory_bytes=81920 * MIB,
        mem_bw_bytes_per_s=1935 * GB,
        bf16_flops=312 * TFLOPS,
        fp8_flops=None,
        host_link_h2d_bytes_per_s=_pcie(4),
        host_link_d2h_bytes_per_s=_pcie(4),
        aliases=("a100-pcie", "a100-80g-pcie"),
        source=_AICONF.format("a100_pcie.yaml") + "; nvidia-smi total",
    ),
    GpuSpec(
        name="a100-40gb-sxm",
        sm_version=80,
        description="NVIDIA A100 SXM4 40GB",
        memory_bytes=40960 * MIB,  # nvidia-smi "40960MiB"
        mem_bw_bytes_per_s=1555 * GB,
        bf16_flops=312 * TFLOPS,
        fp8_flops=None,
        host_link_h2d_bytes_per_s=_pcie(4),
        host_link_d2h_bytes_per_s=_pcie(4),
        aliases=("a100-40g", "a100-40gb", "a100-sxm4-40gb"),
        source="NVIDIA A100 datasheet (1,555 GB/s); nvidia-smi total",
    ),
    GpuSpec(
        name="a100-40gb-pcie",
        sm_version=80,
        description="NVIDIA A100 PCIe 40GB",
        memory_bytes=40960 * MIB,
        mem_bw_bytes_per_s=1555 * GB,
        bf16_flops=312 * TFLOPS,
        fp8_flops=None,
        host_link_h2d_bytes_per_s=_pcie(4),
        host_link_d2h_bytes_per_s=_pcie(4),
        aliases=("a100-40g-pcie",),
        source="NVIDIA A100 datasheet (1,555 GB/s); nvidia-smi total",
    ),
    GpuSpec(
        name="l40s",
        sm_version=89,
        description="NVIDIA L40S 48GB GDDR6",
        memory_bytes=46068 * MIB,  # "46068 MiB" in the AIConfigurator file
        mem_bw_bytes_per_s=864 * GB,
        bf16_flops=362.05 * TFLOPS,
        fp8_flops=733 * TFLOPS,
        host_link_h2d_bytes_per_s=_pcie(4),
        host_link_d2h_bytes_per_s=_pcie(4),
        aliases=("l40s-48g", "l40s-48gb"),
        source=_AICONF.format("l40s.yaml"),
    ),
    GpuSpec(
        name="l4",
        sm_version=89,
        description="NVIDIA L4 24GB GDDR6",
        memory_bytes=23034 * MIB,  # nvidia-smi "23034MiB"
        mem_bw_bytes_per_s=300 * GB,
        bf16_flops=121 * TFLOPS,
        fp8_flops=242 * TFLOPS,
        host_link_h2d_bytes_per_s=_pcie(4),
        host_link_d2h_bytes_per_s=_pcie(4),
        aliases=("l4-24g", "l4-24gb"),
        source=_AICONF.format("l4.yaml") + "; nvidia-smi total",
    ),
    GpuSpec(
        name="rtx-4090",
        sm_version=89,
        description="NVIDIA GeForce RTX 4090 24GB GDDR6X",
        memory_bytes=24564 * MIB,  # nvidia-smi "24564MiB"
        mem_bw_bytes_per_s=1008 * GB,
        bf16_flops=165 * TFLOPS,
        fp8_flops=330 * TFLOPS,
        host_link_h2d_bytes_per_s=_pcie(4),
        host_link_d2h_bytes_per_s=_pcie(4),
        aliases=("4090", "rtx4090", "geforce-rtx-4090"),
        notes="FP8 taken as twice the bf16 dense rate (Ada tensor cores).",
        source="NVIDIA Ada whitepaper (165 TF bf16 dense, 1,008 GB/s); nvidia-smi total",
    ),
    GpuSpec(
        name="b200",
        sm_version=100,
        description="NVIDIA B200 SXM 180GB HBM3e",
        memory_bytes=183359 * MIB,  # nvidia-smi "183359MiB"
        mem_bw_bytes_per_s=7700 * GB,
        bf16_flops=2250 * TFLOPS,
        fp8_flops=4500 * TFLOPS,
        host_link_h2d_bytes_per_s=_pcie(6),
        host_link_d2h_bytes_per_s=_pcie(6),
        aliases=("b200-sxm", "b200-180g", "b200-180gb"),
        source=_AICONF.format("b200_sxm.yaml") + "; nvidia-smi total",
    ),
    GpuSpec(
        name="b300",
        sm_version=103,
        description="NVIDIA B300 SXM 288GB HBM3e (Blackwell Ultra)",
        memory_bytes=275040 * MIB,  # "275040MiB reported by nvidia-smi"
        mem_bw_bytes_per_s=7750 * GB,
        bf16_flops=2250 * TFLOPS,
        fp8_flops=4500 * TFLOPS,
        host_link_h2d_bytes_per_s=_pcie(6),
        host_link_d2h_bytes_per_s=_pcie(6),
        aliases=("b300-sxm", "b300-288g", "b300-288gb"),
        source=_AICONF.format("b300_sxm.yaml"),
    ),
    GpuSpec(
        name="gb200",
        sm_version=100,
        description="NVIDIA GB200 (one Blackwell GPU of a Grace-Blackwell superchip)",
        memory_bytes=189471 * MIB,  # "189471MiB reported by nvidia-smi"
        mem_bw_bytes_per_s=8000 * GB,
        bf16_flops=2500 * TFLOPS,
        fp8_flops=5000 * TFLOPS,
        host_link_h2d_bytes_per_s=_C2C,
        host_link_d2h_bytes_per_s=_C2C,
        aliases=("gb200-nvl72", "gb200-nvl"),
        notes="Host tier is Grace LPDDR5x over NVLink-C2C (450 GB/s per direction).",
        source=_AICONF.format("gb200.yaml"),
    ),
    GpuSpec(
        name="gb300",
        sm_version=103,
        description="NVIDIA GB300 (one Blackwell Ultra GPU of a Grace-Blackwell superchip)",
        memory_bytes=284208 * MIB,  # "284208MiB reported by nvidia-smi"
        mem_bw_bytes_per_s=8000 * GB,
        bf16_flops=2500 * TFLOPS,
        fp8_flops=5000 * TFLOPS,
        host_link_h2d_bytes_per_s=_C2C,
        host_link_d2h_bytes_per_s=_C2C,
        aliases=("gb300-nvl72", "gb300-nvl"),
        notes="Host tier is Grace LPDDR5x over NVLink-C2C (450 GB/s per direction).",
        source=_AICONF.format("gb300.yaml"),
    ),
    GpuSpec(
        name="dgx-spark",
        sm_version=121,
        description="NVIDIA DGX Spark (GB10 Grace Blackwell, 128 GB unified LPDDR5x)",
        memory_bytes=128 * GIB,
        mem_bw_bytes_per_s=273 * GB,
        bf16_flops=125 * TFLOPS,
        fp8_flops=250 * TFLOPS,
        host_link_h2d_bytes_per_s=None,
        host_link_d2h_bytes_per_s=None,
        host_link_latency_s=0.0,
        unified_memory=True,
        aliases=("gb10", "spark", "dgx-gb10"),
        notes=(
            "Unified memory: the OS and CPU processes share the 128 GB pool, so "
            "there is no separate host tier to offload to. FLOP/s derived from "
            "NVIDIA's 1 PFLOP sparse FP4 figure (dense = /2, FP8 = /4, bf16 = /8): "
            "an estimate."
        ),
        source="NVIDIA DGX Spark product page (128 GB LPDDR5x, 273 GB/s)",
    ),
)


def _key(name: str) -> str:
    return name.strip().lower().replace("_", "-").replace(" ", "-")


def _index() -> dict[str, GpuSpec]:
    out: dict[str, GpuSpec] = {}
    for gpu in _CATALOG:
        for key in (gpu.name, *gpu.aliases):
            assert _key(key) not in out, f"duplicate GPU name or alias {key!r}"
            out[_key(key)] = gpu
    return out


_BY_NAME: dict[str, GpuSpec] = _index()


def list_gpus() -> list[GpuSpec]:
    """Every catalog GPU, in catalog order."""
    return list(_CATALOG)


def get_gpu(name: str | GpuSpec) -> GpuSpec:
    """The catalog GPU called ``name`` (case-insensitive; aliases such as ``h100``).

    Raises ConfigError naming the closest matches when ``name`` is unknown.
    """
    if isinstance(name, GpuSpec):
        return name
    gpu = _BY_NAME.get(_key(name))
    if gpu is not None:
        return gpu
    close = difflib.get_close_matches(_key(name), list(_BY_NAME), n=4, cutoff=0.5)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise ConfigError(
        f"unknown GPU {name!r}{hint} (see `kvlab plan --help`; known: "
        f"{', '.join(g.name for g in _CATALOG)}; or give --gpu-memory-gb for a custom GPU)"
    )


#: The largest memory a custom GPU or an offload tier may have (1 PiB, in GiB).
MAX_CUSTOM_MEMORY_GB = float(2**20)
#: The largest bandwidth (GB/s) or throughput (TFLOPS) a custom GPU may have.
MAX_CUSTOM_RATE = 1e7


def check_figure(what: str, value: float, limit: float) -> None:
    """ConfigError unless ``0 < value <= limit`` (NaN and infinity are neither)."""
    if not (math.isfinite(value) and 0 < value <= limit):
        raise ConfigError(f"{what} must be a finite number in (0, {limit:g}], got {value!r}")


def custom_gpu(
    *,
    memory_gb: float,
    mem_bw_gbps: float = 1000.0,
    bf16_tflops: float = 100.0,
    fp8_tflops: float | None = None,
    host_link_gbps: float | None = 32.0,
    host_link_latency_s: float = HOST_LINK_LATENCY_S,
    unified_memory: bool = False,
    sm_version: int = 0,
    name: str = "custom",
) -> GpuSpec:
    """A GPU described by hand.

    ``memory_gb`` is in GiB (2**30 bytes: the unit GPU memory sizes and vLLM's
    logs use); ``mem_bw_gbps`` and ``host_link_gbps`` in GB/s (10**9 bytes/s,
    per direction); ``*_tflops`` dense, in 10**12 FLOP/s.
    """
    if memory_gb <= 0:
        raise ConfigError(f"GPU memory must be > 0 GiB, got {memory_gb}")
    if mem_bw_gbps <= 0 or bf16_tflops <= 0:
        raise ConfigError("GPU bandwidth and TFLOPS must be > 0")
    if host_link_gbps is not None and host_link_gbps <= 0:
        raise ConfigError(f"host link bandwidth must be > 0 GB/s, got {host_link_gbps}")
    check_figure("GPU memory (GiB)", memory_gb, MAX_CUSTOM_MEMORY_GB)
    check_figure("GPU memory bandwidth (GB/s)", mem_bw_gbps, MAX_CUSTOM_RATE)
    check_figure("bf16 TFLOPS", bf16_tflops, MAX_CUSTOM_RATE)
    if fp8_tflops is not None:
        check_figure("fp8 TFLOPS", fp8_tflops, MAX_CUSTOM_RATE)
    if host_link_gbps is not None:
        check_figure("host link bandwidth (GB/s)", host_link_gbps, MAX_CUSTOM_RATE)
    link = None if (unified_memory or host_link_gbps is None) else host_link_gbps * GB
    return GpuSpec(
        name=name,
        description=f"custom GPU ({memory_gb:g} GiB, {mem_bw_gbps:g} GB/s, {bf16_tflops:g} TF)",
        memory_bytes=round(memory_gb * GIB),
        mem_bw_bytes_per_s=mem_bw_gbps * GB,
        bf16_flops=bf16_tflops * TFLOPS,
        fp8_flops=None if fp8_tflops is None else fp8_tflops * TFLOPS,
        host_link_h2d_bytes_per_s=link,
        host_link_d2h_bytes_per_s=link,
        host_link_latency_s=host_link_latency_s,
        unified_memory=unified_memory,
        sm_version=sm_version,
        source="given on the command line",
    )


__all__ = [
    "GIB",
    "MAX_CUSTOM_MEMORY_GB",
    "MAX_CUSTOM_RATE",
    "GpuSpec",
    "check_figure",
    "custom_gpu",
    "get_gpu",
    "list_gpus",
]
