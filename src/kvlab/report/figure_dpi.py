"""The resolution of the PNG figures kvlab writes, chosen once per command (``--dpi``).

Every place that saves a figure asks :func:`png_dpi` with its own default (120
for most figures, 110 for the report's); a command run with ``--dpi N`` wraps
its work in :func:`dpi_override`, and every figure it writes then has N dots
per inch. SVG files are vector: their content does not depend on the DPI.

Invariant: outside :func:`dpi_override` every figure keeps its default
resolution, so output without ``--dpi`` is byte-identical to before.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

#: Accepted range of ``--dpi`` (inclusive): below 10 a figure is a few pixels wide,
#: above 1200 one 10x7-inch figure is over 100 megapixels.
MIN_DPI = 10.0
MAX_DPI = 1200.0

_override: list[float] = []


def png_dpi(default: float) -> float:
    """The DPI to save a figure with: the innermost :func:`dpi_override`, else ``default``."""
    return _override[-1] if _override else default


@contextlib.contextmanager
def dpi_override(dpi: float | None) -> Iterator[None]:
    """Save every figure inside the block at ``dpi`` (None: each figure's default).

    Raises :class:`~kvlab.errors.ConfigError` unless ``dpi`` is None or a finite
    number in [:data:`MIN_DPI`, :data:`MAX_DPI`]."""
    if dpi is None:
        yield
        return
    check_dpi(dpi)
    _override.append(float(dpi))
    try:
        yield
    finally:
        _override.pop()


def check_dpi(dpi: float | None, option: str = "--dpi") -> None:
    """Raise a one-line :class:`~kvlab.errors.ConfigError` naming ``option`` unless
    ``dpi`` is None or a finite number in [:data:`MIN_DPI`, :data:`MAX_DPI`]."""
    import math

    from kvlab.errors import ConfigError

    if dpi is None:
        return
    if not isinstance(dpi, (int, float)) or isinstance(dpi, bool) or not math.isfinite(dpi):
        raise ConfigError(f"{option} must be a finite number, got {dpi!r}")
    if not MIN_DPI <= dpi <= MAX_DPI:
        raise ConfigError(f"{option} must be >= {MIN_DPI:g} and <= {MAX_DPI:g}, got {dpi:g}")


__all__ = ["MAX_DPI", "MIN_DPI", "check_dpi", "dpi_override", "png_dpi"]
