"""Fuzz the readers and the numeric options through the command line, in-process.

A seeded mutator (:class:`Mutator`) damages the files kvlab ships (the traces and model
configs in ``kvlab/data``) and generated workload files: flipped bytes, cut lines, numbers
replaced by NaN, infinity, 1e30 or a string, dropped or mistyped fields, gzip that is not
gzip or ends early. Each mutant goes through the commands that read it (``workload stats``,
``show`` and, fewer, ``simulate`` for workloads and traces; ``plan --model`` and ``models
show`` for configs), and the float and integer options of ``plan``, ``workload gen``,
``replay`` (against a port nothing listens on) and ``sweep`` get the same bad numbers. Every
run must end with exit code 0, 1 or 2, print no traceback, and finish within
:data:`RUN_LIMIT_S`. Hostile paths and environments
(:func:`test_fuzz_hostile_paths_and_environment`): FIFOs, devices, symlink loops,
directories, long lines, non-ASCII paths as inputs and outputs,
outputs on a read-only filesystem, odd COLUMNS/TERM/NO_COLOR/API-key variables. The
counts (runs, tracebacks, hangs) are recorded as the user property
``kvlab_fuzz`` and printed after the test session (tests/conftest.py), and are in each
failure's message. ``KVLAB_FUZZ_SEED`` and ``KVLAB_FUZZ_SCALE`` (a multiplier on the number
of mutants, default 1) vary a run.
"""

from __future__ import annotations

import gzip
import json
import os
import random
import re
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from cli_run import CliRun, run_cli
from kvlab.workload.generators import generate
from kvlab.workload.io import write_workload

DATA = Path(__file__).resolve().parents[1] / "src" / "kvlab" / "data"
SEED = int(os.environ.get("KVLAB_FUZZ_SEED", "20261204"))
SCALE = float(os.environ.get("KVLAB_FUZZ_SCALE", "1"))
#: The most seconds one command may take on a mutant (a run over it counts as a hang).
RUN_LIMIT_S = 10.0

BAD_NUMBERS = [
    "NaN",
    "Infinity",
    "-Infinity",
    "-1",
    "0",
    "1e30",
    "1e+30",
    "1e11",
    "99999999999999999999999",
    "1.5",
    "-0.0",
    '"7"',
    "null",
    "true",
    "[]",
    "{}",
]
BAD_VALUES: list[Any] = [
    float("nan"),
    float("inf"),
    -5,
    0,
    1e12,
    1e300,
    2.5,
    "x",
    None,
    [],
    {},
    True,
    [1, "a"],
]
BAD_OPTIONS = ["nan", "inf", "-inf", "-1", "0", "1e30", "1e12", "1.5", "abc", "", "1e-300", "3"]
GOOD_OPTIONS = ["1", "2", "0.5", "4", "16", "0.9", "64"]


def _value(rng: random.Random) -> str:
    """A bad number half of the time, else a plausible one (so runs get past the first check)."""
    return rng.choice(BAD_OPTIONS if rng.random() < 0.5 else GOOD_OPTIONS)


def _n(k: int) -> int:
    return max(1, round(k * SCALE))


class Mutator:
    """Seeded damage to a file's bytes (see the module docstring)."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)

    def bytes(self, data: bytes) -> bytes:
        op = self.rng.choice(
            [
                self.flip,
                self.cut,
                self.drop_line,
                self.dup_line,
                self.number,
                self.junk,
                self.number,
                self.number,
            ]
        )
        return op(data)

    def flip(self, data: bytes) -> bytes:
        b = bytearray(data)
        for _ in range(self.rng.randint(1, 5)):
            if b:
                b[self.rng.randrange(len(b))] = self.rng.randrange(256)
        return bytes(b)

    def cut(self, data: bytes) -> bytes:
        return data[: self.rng.randrange(len(data) + 1)]

    def _lines(self, data: bytes) -> list[bytes]:
        return data.splitlines(keepends=True) or [b""]

    def drop_line(self, data: bytes) -> bytes:
        lines = self._lines(data)
        del lines[self.rng.randrange(len(lines))]
        return b"".join(lines)

    def dup_line(self, data: bytes) -> bytes:
        lines = self._lines(data)
        i = self.rng.randrange(len(lines))
        lines.insert(i, lines[i])
        return b"".join(lines)

    def number(self, data: bytes) -> bytes:
        spots = [m.span() for m in re.finditer(rb"-?\d+(\.\d+)?([eE][+-]?\d+)?", data)]
        if not spots:
            return self.flip(data)
        for _ in range(self.rng.randint(1, 3)):
            a, b = self.rng.choice(spots)
            new = self.rng.choice(BAD_NUMBERS).encode()
            data = data[:a] + new + data[b:]
            spots = [m.span() for m in re.finditer(rb"-?\d+(\.\d+)?([eE][+-]?\d+)?", data)]
            if not spots:
                break
        return data

    def junk(self, data: bytes) -> bytes:
        at = self.rng.randrange(len(data) + 1)
        return data[:at] + bytes(self.rng.randrange(256) for _ in range(8)) + data[at:]

    def config(self, cfg: dict[str, Any]) -> bytes:
        """A config with one field set to a bad value or dropped, or its text damaged."""
        cfg = dict(cfg)
        roll = self.rng.random()
        if roll < 0.6:
            cfg[self.rng.choice(sorted(cfg))] = self.rng.choice(BAD_VALUES)
        elif roll < 0.75:
            del cfg[self.rng.choice(sorted(cfg))]
        else:
            return self.bytes(json.dumps(cfg, indent=2).encode())
        return json.dumps(cfg).encode()


class Tally:
    """Runs, tracebacks and hangs of one fuzz test, with the first failures' details."""

    def __init__(self) -> None:
        self.runs = self.tracebacks = self.hangs = self.bad_codes = 0
        self.failures: list[str] = []

    def run(self, argv: list[str]) -> CliRun:
        res = run_cli(argv, limit_s=RUN_LIMIT_S)
        self.runs += 1
        bad = ""
        if res.hung:
            self.hangs += 1
            bad = f"hung (> {RUN_LIMIT_S} s)"
        elif res.traceback:
            self.tracebacks += 1
            bad = "traceback:\n" + (res.err + res.out)[-1500:]
        elif res.code not in (0, 1, 2):
            self.bad_codes += 1
            bad = f"exit code {res.code}: {res.err[-300:]}"
        if bad and len(self.failures) < 5:
            self.failures.append(f"kvlab {' '.join(argv)}: {bad}")
        return res

    def counts(self) -> dict[str, int]:
        return {
            "runs": self.runs,
            "tracebacks": self.tracebacks,
            "hangs": self.hangs,
            "bad exit codes": self.bad_codes,
        }

    def check(self, record: Callable[[str, object], None], out_dir: Path) -> None:
        counts = self.counts()
        record("kvlab_fuzz", counts)
        (out_dir / "kvlab-fuzz-counts.json").write_text(json.dumps(counts))
        summary = ", ".join(f"{k} {v}" for k, v in counts.items())
        assert not self.failures, f"{summary}\n\n" + "\n\n".join(self.failures)


def _head(path: Path, lines: int) -> bytes:
    with path.open("rb") as f:
        return b"".join(f.readline() for _ in range(lines))


def _workload_sources(tmp: Path) -> dict[str, bytes]:
    src = {
        "mooncake.jsonl": _head(DATA / "traces" / "mooncake_synthetic.jsonl", 25),
        "azure.csv": _head(DATA / "traces" / "azure2023_conv.csv", 25),
        "vidur.csv": _head(DATA / "traces" / "vidur_arxiv_summarization_lengths.csv", 25),
    }
    for shape in ("chat", "agentic", "rag", "subagents"):
        path = write_workload(generate(shape, seed=1, sessions=2), tmp / f"{shape}.jsonl")
        src[f"{shape}.jsonl"] = path.read_bytes()
    return src


def _mutants(tmp: Path, seed: int, count: int) -> Iterator[Path]:
    m = Mutator(seed)
    sources = _workload_sources(tmp)
    names = sorted(sources)
    for i in range(count):
        name = names[i % len(names)]
        data = m.bytes(sources[name])
        kind = m.rng.random()
        if kind < 0.15:  # compressed, sometimes cut short
            packed = gzip.compress(data)
            if m.rng.random() < 0.5:
                packed = packed[: m.rng.randrange(len(packed) + 1)]
            path = tmp / f"m{i}-{name}.gz"
            path.write_bytes(packed)
        elif kind < 0.2:  # named .gz but plain
            path = tmp / f"m{i}-{name}.gz"
            path.write_bytes(data)
        else:
            path = tmp / f"m{i}-{name}"
            path.write_bytes(data)
        yield path


@pytest.mark.parametrize("command", ["stats", "show"])
def test_fuzz_workload_readers(
    command: str, tmp_path: Path, record_property: Callable[[str, object], None]
) -> None:
    tally = Tally()
    seed = SEED + (0 if command == "stats" else 1)
    for path in _mutants(tmp_path, seed, _n(110)):
        argv = ["workload", command, str(path)]
        tally.run([*argv, "--json"] if command == "stats" else argv)
    for special in ("azure-conv", "chat", str(tmp_path), str(tmp_path / "missing.jsonl")):
        tally.run(["workload", command, special, "--json"])
    tally.check(record_property, tmp_path)


def test_fuzz_simulate_reads_the_same(
    tmp_path: Path, record_property: Callable[[str, object], None]
) -> None:
    tally = Tally()
    for i, path in enumerate(_mutants(tmp_path, SEED + 5, _n(24))):
        tally.run(["simulate", str(path), "--out", str(tmp_path / f"run{i}")])
    tally.check(record_property, tmp_path)


def test_fuzz_model_configs(tmp_path: Path, record_property: Callable[[str, object], None]) -> None:
    tally = Tally()
    m = Mutator(SEED + 2)
    configs = sorted((DATA / "model_configs").glob("*.json"))
    for i in range(_n(90)):
        cfg = json.loads(configs[i % len(configs)].read_text())
        path = tmp_path / f"c{i}" / "config.json"
        path.parent.mkdir()
        path.write_bytes(m.config(cfg))
        tally.run(["models", "show", str(path)])
        tally.run(["plan", "--model", str(path), "--json"])
    tally.check(record_property, tmp_path)


PLAN_OPTIONS = [
    "--gpu-memory-gb",
    "--gpu-bw-gbps",
    "--gpu-tflops",
    "--offload-gb",
    "--gpu-memory-utilization",
    "--context",
    "--concurrency",
    "--block-size",
    "--tp",
    "--kv-cache-memory-bytes",
    "--max-num-seqs",
    "--max-num-batched-tokens",
]


def test_fuzz_plan_options(tmp_path: Path, record_property: Callable[[str, object], None]) -> None:
    tally = Tally()
    rng = random.Random(SEED + 3)
    for _ in range(_n(120)):
        argv = ["plan", "--json"]
        for option in rng.sample(PLAN_OPTIONS, rng.randint(1, 3)):
            argv += [option, _value(rng)]
        if "--gpu-bw-gbps" in argv or "--gpu-tflops" in argv:
            argv += ["--gpu-memory-gb", "80"] if "--gpu-memory-gb" not in argv else []
        tally.run(argv)
    tally.check(record_property, tmp_path)


GEN_OPTIONS = ["--rate", "--burstiness", "--think-time", "--sessions"]
GEN_PARAMS = {
    "chat": ["turns", "system_tokens", "length_cv", "ramp_s", "output_tokens"],
    "rag": ["documents", "top_k", "zipf_s", "document_tokens"],
    "mixed": ["long_fraction", "long_prompt_tokens"],
    "subagents": ["fanout", "planner_steps", "stage_s", "subagent_steps"],
    "sessions": ["turns", "think_time_s"],
}


def test_fuzz_workload_gen_options(
    tmp_path: Path, record_property: Callable[[str, object], None]
) -> None:
    tally = Tally()
    rng = random.Random(SEED + 4)
    for i in range(_n(120)):
        shape = rng.choice(sorted(GEN_PARAMS))
        argv = ["workload", "gen", shape, "-o", str(tmp_path / f"g{i}.jsonl"), "--json"]
        argv += ["--sessions", "3"]
        for option in rng.sample(GEN_OPTIONS, rng.randint(0, 2)):
            argv += [option, _value(rng)]
        for param in rng.sample(GEN_PARAMS[shape], rng.randint(1, 2)):
            argv += ["--set", f"{param}={_value(rng)}"]
        if rng.random() < 0.3:
            argv += ["--arrival", rng.choice(["gamma", "closed", "poisson", "bogus"])]
        tally.run(argv)
    tally.check(record_property, tmp_path)


REPLAY_OPTIONS = [
    "--rate",
    "--burstiness",
    "--metrics-interval",
    "--timeout",
    "--concurrency",
    "--max-errors",
    "--max-model-len",
    "--seed",
]
#: A port nothing listens on: a replay that gets past its checks fails to connect (exit 1).
NOWHERE = "http://127.0.0.1:9"


def test_fuzz_replay_options(
    tmp_path: Path, record_property: Callable[[str, object], None]
) -> None:
    tally = Tally()
    rng = random.Random(SEED + 6)
    wl = write_workload(generate("chat", seed=1, sessions=2), tmp_path / "wl.jsonl")
    for i in range(_n(60)):
        argv = ["replay", str(wl), "--endpoint", NOWHERE, "--model", "m"]
        argv += ["-o", str(tmp_path / f"r{i}"), "--json"]
        for option in rng.sample(REPLAY_OPTIONS, rng.randint(1, 3)):
            argv += [option, _value(rng)]
        if rng.random() < 0.3:
            argv += ["--mode", rng.choice(["closed", "rate", "trace", "sessions", "bogus"])]
        tally.run(argv)
    tally.check(record_property, tmp_path)


SWEEP_AXES = ["num-blocks", "block-size", "offload-gb", "set.max_num_seqs"]


def test_fuzz_sweep_options(tmp_path: Path, record_property: Callable[[str, object], None]) -> None:
    """Bad -j values and axis values; a point that gets past the checks runs (a second)."""
    tally = Tally()
    rng = random.Random(SEED + 7)
    wl = write_workload(generate("chat", seed=1, sessions=2), tmp_path / "wl.jsonl")
    for i in range(_n(10)):
        argv = ["sweep", str(wl), "-o", str(tmp_path / f"s{i}"), "--no-plots", "--json"]
        argv += ["--axis", f"{rng.choice(SWEEP_AXES)}={_value(rng)}"]
        if rng.random() < 0.7:
            argv += ["-j", rng.choice(["0", "-1", "1", "2", "nan", "1e3", "x"])]
        tally.run(argv)
    tally.check(record_property, tmp_path)


def _hostile_inputs(tmp: Path) -> dict[str, Path]:
    """Paths that are not plain readable files, or are odd ones: a FIFO nobody writes to
    (opening it would block), endless or empty devices, a symlink loop, a directory, a
    2 MB line, a file without a newline, a binary file, and a valid workload whose path
    is not ASCII."""
    wl = write_workload(generate("chat", seed=1, sessions=1), tmp / "wörk 负载 🙂.jsonl")
    fifo = tmp / "fifo.jsonl"
    os.mkfifo(fifo)
    (tmp / "loop1").symlink_to(tmp / "loop2")
    (tmp / "loop2").symlink_to(tmp / "loop1")
    (tmp / "long.jsonl").write_text('{"id": "' + "x" * 2_000_000 + '"}\n')
    (tmp / "nonl.jsonl").write_text("a" * 1_000_000)
    (tmp / "binary.jsonl").write_bytes(bytes(range(256)) * 64)
    (tmp / "dir.jsonl").mkdir()
    return {
        "fifo": fifo,
        "zero": Path("/dev/zero"),
        "null": Path("/dev/null"),
        "loop": tmp / "loop1",
        "dir": tmp / "dir.jsonl",
        "long": tmp / "long.jsonl",
        "nonl": tmp / "nonl.jsonl",
        "binary": tmp / "binary.jsonl",
        "unicode": wl,
    }


@pytest.fixture(autouse=True)
def _devices_left_alone() -> Iterator[None]:
    """Output paths include /dev/null: a command that replaced it with a file (an
    atomic write renamed over it, as root) would break every later process here."""
    yield
    if os.name == "posix":
        assert stat.S_ISCHR(os.stat("/dev/null").st_mode), "/dev/null was replaced by a file"


@pytest.mark.skipif(not hasattr(os, "mkfifo") or not Path("/dev/zero").exists(), reason="POSIX")
def test_fuzz_hostile_paths_and_environment(
    tmp_path: Path, record_property: Callable[[str, object], None], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every reader and every output option on FIFOs, devices, symlink loops, directories,
    long lines and non-ASCII paths; outputs on a read-only filesystem (/proc); odd
    environment variables (COLUMNS, TERM, NO_COLOR, an API key with control characters).
    No traceback, no hang (a FIFO must be refused, not opened), exit 0, 1 or 2."""
    tally = Tally()
    inputs = _hostile_inputs(tmp_path)
    good = inputs["unicode"]
    for i, path in enumerate(inputs.values()):
        p = str(path)
        tally.run(["workload", "stats", p, "--json"])
        tally.run(["workload", "show", p])
        tally.run(["simulate", p, "--out", str(tmp_path / f"sim-{i}")])
        tally.run(["cache-curve", p])
        tally.run(["models", "show", p])
        tally.run(["plan", "--model", p, "--json"])
        tally.run(["compare", p, str(good)])
        tally.run(["replay", p, "--endpoint", NOWHERE, "--model", "m", "-o", f"{tmp_path}/r{i}"])
    assert tally.hangs == 0, tally.failures
    outs = [
        Path("/proc/kvlab-fuzz-out"),
        inputs["fifo"],
        inputs["loop"],
        Path("/dev/null"),
        tmp_path / "ünï 输出" / "sub",
        inputs["long"],
    ]
    for i, out in enumerate(outs):
        o = str(out)
        tally.run(["simulate", str(good), "--out", o, "--json"])
        tally.run(["workload", "gen", "chat", "-o", o, "--sessions", "1", "--json"])
        tally.run(["cache-curve", str(good), "--plot", o])
        tally.run(["replay", str(good), "--endpoint", NOWHERE, "--model", "m", "-o", o])
        if i < 2:  # these fail before any work (a good place would run the whole command)
            tally.run(["tiny-model", o])
            tally.run(["agents", "emit", "--out", o])
    envs: list[dict[str, str]] = [
        {"COLUMNS": "abc"},
        {"COLUMNS": "-5", "LINES": "x"},
        {"COLUMNS": "99999999"},
        {"TERM": "dumb", "NO_COLOR": "1"},
        {"KVLAB_API_KEY": "\x01\n bad key"},
    ]
    for env in envs:
        with monkeypatch.context() as m:
            for k, v in env.items():
                m.setenv(k, v)
            tally.run(["workload", "stats", str(good)])
            tally.run(["plan", "--model", "llama-3.1-8b"])
            tally.run(["models", "list"])
            out = tmp_path / f"env-{tally.runs}"
            tally.run(["replay", str(good), "--endpoint", NOWHERE, "--model", "m", "-o", str(out)])
    tally.check(record_property, tmp_path)
