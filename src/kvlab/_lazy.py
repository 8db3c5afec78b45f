"""Names of a package loaded on first use (PEP 562 module ``__getattr__``)."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any


def load_lazy(package: str, table: Mapping[str, str], namespace: dict[str, Any], name: str) -> Any:
    """Import ``name`` from the module ``table[name]`` names, keep it in ``namespace``
    (the package's globals, so the next access is a plain lookup) and return it;
    AttributeError, as for any module, when the package has no such name."""
    module = table.get(name)
    if module is None:
        raise AttributeError(f"module {package!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    namespace[name] = value
    return value
