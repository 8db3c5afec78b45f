"""The parser registry: ``model_type`` -> the function that reads that family's config.

Each family module registers its parsers with :func:`register` (and a multimodal
wrapper type with :func:`register_wrapper`) when it is imported;
:mod:`kvlab.models.hf.parse` imports every family module, so the registry is complete
once that module is loaded. A ``model_type`` is registered once; registering it again
is a programming error (RuntimeError).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kvlab.models.hf.config import Config
from kvlab.models.hf.params import Params
from kvlab.models.spec import LayerSpec


@dataclass(frozen=True)
class Parsed:
    """What a parser reads from a config: the layers holding per-sequence memory, the
    parameter counts, and the sizes :class:`~kvlab.models.spec.ModelSpec` records.
    ``state_dtype`` None means the model dtype."""

    layers: tuple[LayerSpec, ...]
    params: Params
    hidden: int
    heads: int
    head_dim: int
    vocab: int
    max_context: int
    state_dtype: str | None = None


#: Reads one family's config.
Parser = Callable[[Config], Parsed]
#: A multimodal wrapper's language-model config, from the wrapper's config.
Unwrap = Callable[[dict[str, Any]], dict[str, Any]]

#: model_type -> parser, filled by the family modules.
PARSERS: dict[str, Parser] = {}
#: model_type of a multimodal wrapper -> its :data:`Unwrap`, filled by the family modules.
WRAPPERS: dict[str, Unwrap] = {}


def _claim(model_types: tuple[str, ...]) -> None:
    for mt in model_types:
        if mt in PARSERS or mt in WRAPPERS:
            raise RuntimeError(f"model_type {mt!r} is registered twice")


def register(*model_types: str) -> Callable[[Parser], Parser]:
    """Decorator: the parser for ``model_types``."""
    _claim(model_types)

    def add(parser: Parser) -> Parser:
        for mt in model_types:
            PARSERS[mt] = parser
        return parser

    return add


def register_wrapper(*model_types: str) -> Callable[[Unwrap], Unwrap]:
    """Decorator: ``model_types`` wrap a language model whose config this function returns
    (with its own ``model_type``, parsed by the parser registered for that)."""
    _claim(model_types)

    def add(unwrap: Unwrap) -> Unwrap:
        for mt in model_types:
            WRAPPERS[mt] = unwrap
        return unwrap

    return add


__all__ = ["PARSERS", "WRAPPERS", "Parsed", "Parser", "Unwrap", "register", "register_wrapper"]
