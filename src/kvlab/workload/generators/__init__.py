"""Seeded workload generators, one module per shape.

``generate(shape, seed=0, **params)`` returns a :class:`~kvlab.workload.records.Workload`
whose ``meta`` records the generator, its full parameter set and the seed, so
the file header reproduces it. The same shape, parameters and seed give the
same workload on every machine (numpy ``PCG64`` via ``default_rng(seed)``).
Parameters and their defaults are the fields of each shape's params
dataclass (:func:`shape_params`); ``docs/workloads.md`` describes them.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from kvlab.errors import ConfigError
from kvlab.workload.generators import agentic, chat, mixed, planner, rag, sessions, subagents
from kvlab.workload.generators._common import CommonParams
from kvlab.workload.records import MAX_TOKENS, Request, Workload


@dataclass(frozen=True)
class Shape:
    """A registered workload shape: its params class and builder."""

    name: str
    params_cls: type[CommonParams]
    build: Callable[[Any, np.random.Generator], tuple[Request, ...]]
    doc: str

    @property
    def summary(self) -> str:
        """The first line of the shape's description."""
        return self.doc.strip().splitlines()[0].split(": ", 1)[-1]


def _shape(name: str, mod: types.ModuleType, params_cls: type[CommonParams]) -> Shape:
    return Shape(name, params_cls, mod.build, mod.__doc__ or name)


#: Shape name -> Shape, in documentation order.
SHAPES: Mapping[str, Shape] = types.MappingProxyType(
    {
        "chat": _shape("chat", chat, chat.ChatParams),
        "planner": _shape("planner", planner, planner.PlannerParams),
        "subagents": _shape("subagents", subagents, subagents.SubagentsParams),
        "sessions": _shape("sessions", sessions, sessions.SessionsParams),
        "agentic": _shape("agentic", agentic, agentic.AgenticParams),
        "mixed": _shape("mixed", mixed, mixed.MixedParams),
        "rag": _shape("rag", rag, rag.RagParams),
    }
)


def get_shape(name: str) -> Shape:
    """The shape called ``name``; ConfigError listing the choices otherwise."""
    try:
        return SHAPES[name]
    except KeyError:
        raise ConfigError(
            f"unknown workload shape {name!r}; choose one of {', '.join(SHAPES)}"
        ) from None


def shape_params(name: str) -> dict[str, Any]:
    """Parameter name -> default value of a shape."""
    return {f.name: f.default for f in dataclasses.fields(get_shape(name).params_cls)}


def make_params(name: str, **params: Any) -> CommonParams:
    """Build and check a shape's params; unknown names and bad types are ConfigError."""
    shape = get_shape(name)
    hints = typing.get_type_hints(shape.params_cls)
    known = {f.name for f in dataclasses.fields(shape.params_cls)}
    for key, value in params.items():
        if key not in known:
            raise ConfigError(
                f"unknown parameter {key!r} for shape {name!r}; "
                f"choose from {', '.join(sorted(known))}"
            )
        params[key] = _coerce(key, value, hints[key])
    p = shape.params_cls(**params)
    p.check()
    return p


def parse_assignments(name: str, items: list[str]) -> dict[str, Any]:
    """``["key=value", ...]`` -> typed params of shape ``name`` (strings parsed by field type)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise ConfigError(f"--set expects KEY=VALUE, got {item!r}")
        out[key] = value.strip()
    make_params(name, **out)  # validates
    return out


def generate(shape: str, seed: int = 0, **params: Any) -> Workload:
    """Generate a workload of ``shape`` (see :data:`SHAPES`) from ``seed`` and params."""
    p = make_params(shape, **params)
    rng = np.random.default_rng(seed)
    requests = get_shape(shape).build(p, rng)
    _check_generated(shape, requests)
    meta = {
        "generator": shape,
        "params": dataclasses.asdict(p),
        "seed": seed,
        "description": get_shape(shape).summary,
    }
    return Workload(requests=requests, name=shape, meta=meta)


def _check_generated(shape: str, requests: tuple[Request, ...]) -> None:
    """What parameters in range can still give: a prompt or output above MAX_TOKENS (long
    histories) or a time that overflowed; ConfigError, as a workload file could not hold it."""
    if not requests:
        return
    longest = max(requests, key=lambda r: max(r.prompt_tokens, r.output_tokens))
    tokens = max(longest.prompt_tokens, longest.output_tokens)
    if tokens > MAX_TOKENS:
        raise ConfigError(
            f"shape {shape}: request {longest.request_id} would have {tokens:,} tokens, above "
            f"the limit {MAX_TOKENS:,}; lower the *_tokens parameters or the turns"
        )
    times = [t for r in requests for t in (r.arrival_s, r.think_time_s) if t is not None]
    if not all(map(math.isfinite, times)):
        raise ConfigError(
            f"shape {shape}: the times overflow; lower the think and stage times or raise the rate"
        )


def _coerce(key: str, value: Any, typ: Any) -> Any:
    try:
        if typ is bool:
            if isinstance(value, str):
                low = value.lower()
                if low in ("1", "true", "yes", "on"):
                    return True
                if low in ("0", "false", "no", "off"):
                    return False
                raise ValueError(value)
            if not isinstance(value, bool):
                raise ValueError(value)
            return value
        if typ is int:
            if isinstance(value, bool):
                raise ValueError(value)
            f = float(value)
            if not f.is_integer():
                raise ValueError(value)
            return int(f)
        if typ is float:
            if isinstance(value, bool):
                raise ValueError(value)
            return float(value)
        return str(value)
    except (TypeError, ValueError):
        tname = getattr(typ, "__name__", str(typ))
        raise ConfigError(f"parameter {key} must be {tname}, got {value!r}") from None


__all__ = [
    "SHAPES",
    "Shape",
    "generate",
    "get_shape",
    "make_params",
    "parse_assignments",
    "shape_params",
]
