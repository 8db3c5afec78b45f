"""Recognise a workload or trace file by its content, and load it.

:func:`detect_format` looks at the first non-empty line only:

Blank lines and ``#`` comment lines are skipped; ``.gz`` files are read
transparently.

- a JSON object with ``hash_ids`` -> ``"mooncake"``;
- a JSON object with ``segments``, or a kvlab workload header (a key or a
  ``format`` value starting with ``kvlab``) -> ``"kvlab"``;
- a CSV header with ``TIMESTAMP, ContextTokens, GeneratedTokens`` -> ``"azure"``;
- a CSV header with ``num_prefill_tokens, num_decode_tokens`` -> ``"vidur"``.

:func:`builtin_trace` names the public traces shipped inside the package.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

from kvlab.errors import ConfigError, WorkloadError
from kvlab.workload.records import MAX_TOKENS, Workload
from kvlab.workload.textfile import check_regular, open_text, read_errors

#: Formats :func:`load_workload` understands.
FORMATS: tuple[str, ...] = ("kvlab", "mooncake", "azure", "vidur")

#: Traces shipped in ``kvlab/data/traces`` (see the README.md there for sources).
BUILTIN_TRACES: dict[str, str] = {
    "mooncake-conversation": "mooncake_conversation.jsonl",
    "mooncake-synthetic": "mooncake_synthetic.jsonl",
    "azure-conv": "azure2023_conv.csv",
    "azure-code": "azure2023_code.csv",
    "vidur-arxiv": "vidur_arxiv_summarization_lengths.csv",
}


def builtin_trace(name: str) -> Path:
    """The path of a shipped trace, e.g. ``builtin_trace("azure-conv")``."""
    file = BUILTIN_TRACES.get(name)
    if file is None:
        raise ConfigError(
            f"unknown built-in trace {name!r}; choose one of {', '.join(BUILTIN_TRACES)}"
        )
    return Path(str(resources.files("kvlab").joinpath("data", "traces", file)))


def resolve_trace(name_or_path: str | Path) -> Path:
    """A path as given, or a built-in trace name when no such file exists."""
    p = Path(name_or_path)
    if not p.exists() and str(name_or_path) in BUILTIN_TRACES:
        return builtin_trace(str(name_or_path))
    return p


def detect_format(path: str | Path) -> str:
    """The format of a workload or trace file, judged from its first non-empty line."""
    p = Path(path)
    found = _first_line(p)
    if found is None:
        raise WorkloadError("the file is empty", path=p)
    line_no, first = found
    if first.startswith("{"):
        try:
            obj = json.loads(first)
        except ValueError as e:
            raise WorkloadError(f"invalid JSON: {e}", path=p, line=line_no) from None
        fmt = _json_format(obj)
        if fmt is not None:
            return fmt
        keys = ", ".join(sorted(obj)) if isinstance(obj, dict) else type(obj).__name__
        raise WorkloadError(
            f"unrecognised JSON line (keys {keys}); pass the format explicitly "
            f"({', '.join(FORMATS)})",
            path=p,
            line=line_no,
        )
    cols = {c.strip().strip('"').lstrip("\ufeff") for c in first.split(",")}
    if {"TIMESTAMP", "ContextTokens", "GeneratedTokens"} <= cols:
        return "azure"
    if {"num_prefill_tokens", "num_decode_tokens"} <= cols:
        return "vidur"
    raise WorkloadError(
        f"cannot tell the format from the first line; pass it explicitly ({', '.join(FORMATS)})",
        path=p,
        line=line_no,
    )


def load_workload(
    path: str | Path,
    fmt: str | None = None,
    *,
    rate_per_s: float | None = None,
    seed: int = 0,
    sort: bool = False,
    allow_empty: bool = False,
) -> Workload:
    """Load ``path`` as a :class:`Workload`; ``fmt`` is detected when None.

    ``path`` may also name a built-in trace (:data:`BUILTIN_TRACES`) or a
    workload shape (``agentic``, ``chat``, ...: see
    :mod:`kvlab.workload.generators`), generated with its default parameters
    and ``seed``. ``rate_per_s`` and ``seed`` apply to formats without
    timestamps (vidur). ``sort`` and ``allow_empty`` apply to kvlab files (see
    :func:`kvlab.workload.io.read_workload`; traces are always sorted); with
    ``allow_empty`` a file without any line is an empty kvlab workload.

    Every command that takes a workload loads it here, so a name or a file
    reads the same everywhere.
    """
    if fmt is not None and fmt not in FORMATS:
        raise ConfigError(f"unknown workload format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if fmt is None and not Path(path).exists() and str(path) not in BUILTIN_TRACES:
        from kvlab.workload.generators import SHAPES, generate  # imports numpy

        if str(path) in SHAPES:  # a built-in shape, generated with its defaults
            return generate(str(path), seed=seed)
    p = resolve_trace(path)
    check_regular(p)  # a FIFO or a device: refused before anything opens it
    if fmt is None:
        fmt = "kvlab" if allow_empty and _first_line(p) is None else detect_format(p)
    if fmt == "kvlab":
        from kvlab.workload.io import read_workload

        wl: Workload = read_workload(p, sort=sort, allow_empty=allow_empty)
        return wl
    from kvlab.workload import importers

    with read_errors(p):  # what the importers' own error handling lets through
        if fmt == "mooncake":
            wl = importers.read_mooncake(p)
        elif fmt == "azure":
            wl = importers.read_azure(p)
        else:
            wl = importers.read_vidur(p, rate_per_s=rate_per_s, seed=seed)
    check_token_bounds(wl, p, fmt)
    return wl


#: The token-count columns of each trace format: (prompt, output).
TOKEN_FIELDS: dict[str, tuple[str, str]] = {
    "mooncake": ("input_length", "output_length"),
    "azure": ("ContextTokens", "GeneratedTokens"),
    "vidur": ("num_prefill_tokens", "num_decode_tokens"),
}


def check_token_bounds(wl: Workload, path: Path, fmt: str) -> None:
    """WorkloadError naming the file, the data row and the column when an imported request
    has more than :data:`~kvlab.workload.records.MAX_TOKENS` prompt or output tokens (a
    kvlab file is checked line by line as it is read)."""
    if not wl.requests:
        return
    worst = max(wl.requests, key=lambda r: max(r.prompt_tokens, r.output_tokens))
    if max(worst.prompt_tokens, worst.output_tokens) <= MAX_TOKENS:
        return
    prompt_field, output_field = TOKEN_FIELDS[fmt]
    big_prompt = worst.prompt_tokens > MAX_TOKENS
    value = worst.prompt_tokens if big_prompt else worst.output_tokens
    raise WorkloadError(
        f"data row {int(worst.request_id) + 1}: {value:.3g} tokens is above the limit "
        f"{MAX_TOKENS:,}",
        path=path,
        field=prompt_field if big_prompt else output_field,
    )


def _json_format(obj: Any) -> str | None:
    if not isinstance(obj, dict):
        return None
    if "hash_ids" in obj:
        return "mooncake"
    if "segments" in obj:
        return "kvlab"
    if any(str(k).startswith("kvlab") for k in obj):
        return "kvlab"
    if str(obj.get("format", "")).startswith("kvlab"):
        return "kvlab"
    return None


def _first_line(p: Path) -> tuple[int, str] | None:
    """The first line that is neither blank nor a ``#`` comment, with its number; None when
    there is none (``.gz`` read transparently)."""
    with read_errors(p), open_text(p) as f:
        for i, line in enumerate(f, start=1):
            s = line.strip()
            if s and not s.startswith("#"):
                return i, s
    return None


__all__ = [
    "BUILTIN_TRACES",
    "FORMATS",
    "builtin_trace",
    "detect_format",
    "load_workload",
    "resolve_trace",
]
