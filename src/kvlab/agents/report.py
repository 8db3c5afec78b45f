"""The annual reports of the pension workflow: seeded companies, consistent tables, a checker.

A :class:`Company` holds the true figures of one company over :data:`YEARS`
(EUR millions, one decimal): revenue, EBITDA, pension plan assets, pension
obligations (liabilities) and yearly contributions. Invariants, checked by
:func:`check_report` on the rendered text:

* EBITDA < revenue, every year;
* the funded status printed is exactly assets - liabilities;
* every table that repeats a figure (the summary on page 1, the detailed tables
  on later pages) prints the same value.

:func:`render_report` writes ``pages`` pages of about ``page_words`` words each:
prose from :func:`kvlab.workload.content.text` (words the tiny model's tokenizer
has as single tokens) and, on page 1 and every ``TABLE_EVERY`` pages, the
tables. The same seed gives the same companies and byte-identical reports.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from kvlab.errors import ConfigError

#: The fiscal years every report covers.
YEARS: tuple[int, ...] = (2021, 2022, 2023, 2024, 2025)
#: Company names, in order; ``companies(n)`` takes the first n.
NAMES: tuple[str, ...] = (
    "Aldermoor", "Brightwell", "Castellan", "Dunmore", "Eastbrook", "Fairhaven",
    "Glenridge", "Harrowgate", "Ironbridge", "Juniper", "Kingsmere", "Larkfield",
)  # fmt: skip
#: The line items of the pension table and the income table, as printed.
ITEMS: tuple[str, ...] = ("Revenue", "EBITDA", "Plan assets", "Obligations", "Contributions")
#: A table is printed on page 1 and then on every TABLE_EVERY-th page.
TABLE_EVERY = 10


@dataclass(frozen=True, slots=True)
class Company:
    """True figures of one company, EUR millions rounded to 0.1, one value per year of YEARS."""

    name: str
    revenue: tuple[float, ...]
    ebitda: tuple[float, ...]
    assets: tuple[float, ...]
    liabilities: tuple[float, ...]
    contributions: tuple[float, ...]

    def funded_status(self, i: int) -> float:
        """Assets minus liabilities of year index ``i``, rounded to 0.1."""
        return round(self.assets[i] - self.liabilities[i], 1)

    def funding_ratio(self, i: int = -1) -> float:
        """Assets / liabilities of year index ``i`` (default: the last year), to 4 places."""
        return round(self.assets[i] / self.liabilities[i], 4)

    def key_facts(self) -> dict[str, float]:
        """The figures a final context must keep (last year): label -> value."""
        return {
            f"{self.name} revenue": self.revenue[-1],
            f"{self.name} EBITDA": self.ebitda[-1],
            f"{self.name} plan assets": self.assets[-1],
            f"{self.name} obligations": self.liabilities[-1],
        }


def fmt(value: float) -> str:
    """A figure as the reports print it: thousands separators, one decimal (``12,345.6``)."""
    return f"{value:,.1f}"


def companies(n: int, seed: int = 0) -> tuple[Company, ...]:
    """``n`` companies (1 <= n <= len(NAMES)) with figures drawn from ``seed``."""
    if not 1 <= n <= len(NAMES):
        raise ConfigError(f"companies must be between 1 and {len(NAMES)}, got {n}")
    rng = np.random.default_rng(seed)
    out = []
    for name in NAMES[:n]:
        rev0 = float(rng.uniform(800, 9000))
        growth = rng.normal(0.04, 0.03, len(YEARS))
        revenue = rev0 * np.cumprod(1 + growth)
        margin = rng.uniform(0.08, 0.25, len(YEARS))
        liab0 = rev0 * float(rng.uniform(0.3, 1.2))
        liabilities = liab0 * np.cumprod(1 + rng.normal(0.03, 0.01, len(YEARS)))
        assets = liabilities * rng.uniform(0.7, 1.1, len(YEARS))
        contributions = liabilities * rng.uniform(0.01, 0.04, len(YEARS))
        out.append(
            Company(
                name=name,
                revenue=_r(revenue),
                ebitda=_r(revenue * margin),
                assets=_r(assets),
                liabilities=_r(liabilities),
                contributions=_r(contributions),
            )
        )
    return tuple(out)


def _r(a: np.ndarray) -> tuple[float, ...]:
    return tuple(round(float(x), 1) for x in a)


def table(c: Company) -> str:
    """The figures table of ``c``: one row per item of ITEMS plus the funded status."""
    head = "| EUR m | " + " | ".join(str(y) for y in YEARS) + " |"
    rows = [head, "|---" * (len(YEARS) + 1) + "|"]
    series = (c.revenue, c.ebitda, c.assets, c.liabilities, c.contributions)
    for item, values in zip(ITEMS, series, strict=True):
        rows.append(f"| {item} | " + " | ".join(fmt(v) for v in values) + " |")
    funded = (c.funded_status(i) for i in range(len(YEARS)))
    rows.append("| Funded status | " + " | ".join(fmt(v) for v in funded) + " |")
    return "\n".join(rows)


def render_report(c: Company, pages: int, page_words: int = 400) -> str:
    """The annual report of ``c``: ``pages`` pages, tables on page 1 and every TABLE_EVERY-th."""
    from kvlab.workload.content import text

    if pages < 1 or page_words < 1:
        raise ConfigError(
            f"a report needs pages >= 1 and page_words >= 1, got {pages}, {page_words}"
        )
    parts = [f"{c.name} Group - Annual Report {YEARS[-1]}"]
    tab = table(c)
    for p in range(1, pages + 1):
        parts.append(f"\n## Page {p}\n")
        if p == 1 or p % TABLE_EVERY == 0:
            parts.append(f"Key figures of {c.name}:\n{tab}\n")
        parts.append(text(f"report-{c.name}-page-{p}", page_words).strip())
    return "\n".join(parts) + "\n"


_ROW = re.compile(r"^\| ([A-Za-z ]+) \| (.+) \|$", re.MULTILINE)


def parse_tables(report: str) -> list[dict[str, tuple[float, ...]]]:
    """Every figures table in ``report``, in order: item -> values (one per year)."""
    tables: list[dict[str, tuple[float, ...]]] = []
    current: dict[str, tuple[float, ...]] = {}
    for m in _ROW.finditer(report):
        item = m.group(1).strip()
        if item == "EUR m":
            if current:
                tables.append(current)
            current = {}
            continue
        cells = [x.strip().replace(",", "") for x in m.group(2).split("|")]
        current[item] = tuple(float(x) for x in cells)
    if current:
        tables.append(current)
    return tables


def check_report(report: str, c: Company) -> list[str]:
    """What is wrong with ``report`` as a report of ``c`` (empty list: consistent and true)."""
    problems: list[str] = []
    tables = parse_tables(report)
    if not tables:
        return ["no figures table"]
    truth = parse_tables(table(c))[0]
    for k, t in enumerate(tables):
        if t != truth:
            problems.append(f"table {k + 1} differs from the company's figures")
        rev, ebitda = t.get("Revenue", ()), t.get("EBITDA", ())
        if any(e >= r for e, r in zip(ebitda, rev, strict=False)):
            problems.append(f"table {k + 1}: EBITDA not below revenue")
        a, li, f = t.get("Plan assets", ()), t.get("Obligations", ()), t.get("Funded status", ())
        for i, (x, y, z) in enumerate(zip(a, li, f, strict=False)):
            if round(x - y, 1) != z:
                problems.append(
                    f"table {k + 1}: funded status {YEARS[i]} is not assets - obligations"
                )
    return problems
