"""``run_monte_carlo``: a seeded simulation of a pension fund's funded ratio.

Each run draws ``years`` yearly asset returns ~ Normal(``mean_return``, ``volatility``)
and liability growth ~ Normal(``liability_growth``, ``liability_volatility``); assets
grow by their return plus the yearly contribution, liabilities by their growth. The
result is statistics over the runs of the final funded ratio (assets / liabilities)
and the share of runs that end underfunded (ratio < 1). Same inputs and seed: the
same figures, bit for bit.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from kvlab.errors import ConfigError

#: Defaults of the workflow: 10,000 runs over 30 years.
DEFAULT_RUNS = 10_000
DEFAULT_YEARS = 30


@dataclass(frozen=True, slots=True)
class MonteCarloStats:
    """Statistics of the final funded ratio over ``runs`` runs of ``years`` years."""

    runs: int
    years: int
    mean_ratio: float
    p5_ratio: float
    p50_ratio: float
    p95_ratio: float
    prob_underfunded: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def run_monte_carlo(
    assets: float,
    liabilities: float,
    contribution: float,
    *,
    mean_return: float = 0.05,
    volatility: float = 0.10,
    liability_growth: float = 0.03,
    liability_volatility: float = 0.01,
    runs: int = DEFAULT_RUNS,
    years: int = DEFAULT_YEARS,
    seed: int = 0,
) -> MonteCarloStats:
    """Simulate ``runs`` paths of ``years`` years from the given starting figures."""
    if assets <= 0 or liabilities <= 0 or contribution < 0:
        raise ConfigError("run_monte_carlo: assets and liabilities must be > 0, contribution >= 0")
    if runs < 1 or years < 1:
        raise ConfigError(f"run_monte_carlo: runs and years must be >= 1, got {runs}, {years}")
    rng = np.random.default_rng(seed)
    returns = rng.normal(mean_return, volatility, (runs, years))
    growth = rng.normal(liability_growth, liability_volatility, (runs, years))
    a = np.full(runs, float(assets))
    li = np.full(runs, float(liabilities))
    for y in range(years):
        a = a * (1.0 + returns[:, y]) + contribution
        li = li * (1.0 + growth[:, y])
    ratio = a / li
    p5, p50, p95 = np.percentile(ratio, [5, 50, 95])
    return MonteCarloStats(
        runs=runs,
        years=years,
        mean_ratio=round(float(ratio.mean()), 4),
        p5_ratio=round(float(p5), 4),
        p50_ratio=round(float(p50), 4),
        p95_ratio=round(float(p95), 4),
        prob_underfunded=round(float((ratio < 1.0).mean()), 4),
    )
