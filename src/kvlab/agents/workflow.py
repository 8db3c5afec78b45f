"""The pension workflow: five tools over seeded annual reports, and its fixed tool sequence.

For every company the workflow calls, in order:

1. ``fetch_annual_report(company)``: the whole report (:func:`render_report`);
2. ``extract_figures(company)``: the figures table parsed from the fetched report,
   as JSON (the tool refuses a company whose report was not fetched first);
3. ``run_monte_carlo(company, assets, liabilities, contribution)``: statistics of
   10,000 seeded runs over 30 years (:mod:`kvlab.agents.montecarlo`);
4. ``calc(expression)``: the funding ratio, by the AST evaluator of
   :mod:`kvlab.agents.calc`;

and at the end ``write_masterplan(plan)`` with one line per company. The
arguments of each call come from the previous tools' results (:class:`ScriptedPolicy`),
so the sequence is the same whoever runs it: the model calls of a run with a tiny
model are real requests, while the decisions are scripted.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from kvlab.agents.calc import calc
from kvlab.agents.montecarlo import run_monte_carlo
from kvlab.agents.report import NAMES, YEARS, Company, companies, fmt, parse_tables, render_report
from kvlab.errors import ConfigError

#: Tool names, in the order one company uses them.
COMPANY_TOOLS: tuple[str, ...] = (
    "fetch_annual_report",
    "extract_figures",
    "run_monte_carlo",
    "calc",
)
#: The last tool of the workflow.
FINAL_TOOL = "write_masterplan"
#: Every tool name.
TOOL_NAMES: tuple[str, ...] = (*COMPANY_TOOLS, FINAL_TOOL)

SYSTEM_PROMPT = (
    "You are a pension analyst. For each company: fetch its annual report, extract the "
    "figures, run a Monte Carlo of its pension fund, compute its funding ratio with calc; "
    "then write a masterplan that cites every company's figures."
)


#: Argument types of each tool: name -> argument -> "string" or "number" (all required).
TOOL_ARGS: dict[str, dict[str, str]] = {
    "fetch_annual_report": {"company": "string"},
    "extract_figures": {"company": "string"},
    "run_monte_carlo": {
        "company": "string",
        "assets": "number",
        "liabilities": "number",
        "contribution": "number",
    },
    "calc": {"expression": "string"},
    FINAL_TOOL: {"plan": "string"},
}
_TOOL_DOCS: dict[str, str] = {
    "fetch_annual_report": "Fetch the whole annual report of a company.",
    "extract_figures": "The figures table (EUR m, 2021-2025) of a fetched report, as JSON.",
    "run_monte_carlo": "Statistics of a seeded Monte Carlo of the company's pension fund "
    "(funded ratio over 30 years) from its plan assets, obligations and yearly contribution.",
    "calc": "Evaluate an arithmetic expression (numbers, + - * / // % **, abs round min max sqrt).",
    FINAL_TOOL: "Write the masterplan: one line per company with its figures.",
}


def tool_schemas() -> list[dict[str, Any]]:
    """The five tools in OpenAI's tool-calling format (``bind_tools`` accepts them)."""
    return [
        {
            "type": "function",
            "function": {
                "name": name,
                "description": _TOOL_DOCS[name],
                "parameters": {
                    "type": "object",
                    "properties": {a: {"type": t} for a, t in args.items()},
                    "required": list(args),
                },
            },
        }
        for name, args in TOOL_ARGS.items()
    ]


def check_tool_call(name: Any, args: Any) -> str | None:
    """Why a tool call cannot run (unknown tool, arguments not an object, a missing or
    unexpected argument, a wrong type), or None when it matches :data:`TOOL_ARGS`."""
    if name not in TOOL_ARGS:
        return f"unknown tool {name!r}; tools: {', '.join(TOOL_NAMES)}"
    if not isinstance(args, dict):
        return f"{name}: arguments must be a JSON object, got {type(args).__name__}"
    spec = TOOL_ARGS[name]
    missing = [a for a in spec if a not in args]
    if missing:
        return f"{name}: missing argument {', '.join(missing)}"
    extra = [a for a in args if a not in spec]
    if extra:
        return f"{name}: unexpected argument {', '.join(map(str, extra))}"
    for a, t in spec.items():
        v = args[a]
        ok = (
            isinstance(v, str)
            if t == "string"
            else isinstance(v, int | float) and not isinstance(v, bool)
        )
        if not ok:
            return f"{name}: argument {a} must be a {t}, got {json.dumps(v)[:40]}"
    return None


#: The most words of one annual report (pages x page_words): each is built in memory.
MAX_REPORT_WORDS = 1_000_000


@dataclass(frozen=True, slots=True)
class WorkflowConfig:
    """Size of one workflow: ``num_companies`` reports of ``pages`` pages of about
    ``page_words`` words; Monte Carlo with ``mc_runs`` runs of ``mc_years`` years."""

    num_companies: int = 8
    pages: int = 50
    page_words: int = 400
    mc_runs: int = 10_000
    mc_years: int = 30
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("num_companies", "pages", "page_words", "mc_runs", "mc_years"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ConfigError(f"workflow: {name} must be an integer >= 1, got {v!r}")
        if self.pages * self.page_words > MAX_REPORT_WORDS:
            raise ConfigError(
                f"workflow: pages x page_words must be at most {MAX_REPORT_WORDS:,} words per "
                f"report (each is built in memory), got {self.pages:,} x {self.page_words:,}"
            )
        if self.num_companies > len(NAMES):
            raise ConfigError(f"workflow: at most {len(NAMES)} companies, got {self.num_companies}")

    @property
    def num_model_calls(self) -> int:
        """Model calls of a complete run: one per tool call plus the final answer."""
        return self.num_companies * len(COMPANY_TOOLS) + 2


@dataclass
class Workflow:
    """The companies of one run and the tools that act on them.

    ``fetched`` holds the reports fetched so far (the tools' own storage, not the
    model's context); tools return strings, as tool messages carry them."""

    config: WorkflowConfig
    companies: tuple[Company, ...] = ()
    fetched: dict[str, str] = field(default_factory=dict)
    masterplan: str | None = None

    def __post_init__(self) -> None:
        if not self.companies:
            self.companies = companies(self.config.num_companies, self.config.seed)

    def company(self, name: str) -> Company:
        for c in self.companies:
            if c.name == name:
                return c
        raise ConfigError(f"unknown company {name!r}")

    def key_facts(self) -> dict[str, float]:
        """Every company's key figures: label -> value."""
        out: dict[str, float] = {}
        for c in self.companies:
            out.update(c.key_facts())
        return out

    def call(self, name: str, args: Mapping[str, Any]) -> str:
        """Run tool ``name`` with ``args``; the result as the tool message's text."""
        if name == "fetch_annual_report":
            c = self.company(str(args["company"]))
            report = render_report(c, self.config.pages, self.config.page_words)
            self.fetched[c.name] = report
            return report
        if name == "extract_figures":
            company = str(args["company"])
            if company not in self.fetched:
                raise ConfigError(f"extract_figures: the report of {company!r} was not fetched")
            first = parse_tables(self.fetched[company])[0]
            return json.dumps({"company": company, "EUR m, last year": {
                k: v[-1] for k, v in first.items()}, "series": first})  # fmt: skip
        if name == "run_monte_carlo":
            stats = run_monte_carlo(
                float(args["assets"]),
                float(args["liabilities"]),
                float(args["contribution"]),
                runs=self.config.mc_runs,
                years=self.config.mc_years,
                seed=self.config.seed,
            )
            return json.dumps({"company": args.get("company"), **stats.to_dict()})
        if name == "calc":
            return repr(calc(str(args["expression"])))
        if name == FINAL_TOOL:
            self.masterplan = str(args["plan"])
            return "masterplan written (" + str(len(self.masterplan)) + " characters)"
        raise ConfigError(f"unknown tool {name!r}; tools: {', '.join(TOOL_NAMES)}")


@dataclass(frozen=True, slots=True)
class Decision:
    """What the agent does at one model call: a tool call, or the final answer (``tool`` None)."""

    step: int
    company: str | None
    tool: str | None
    args: dict[str, Any]


class ScriptedPolicy:
    """The workflow's fixed tool sequence; arguments from the tools' earlier results.

    ``decide(step, results)`` is the decision at model call ``step`` (0-based), given
    ``results``: tool name and company -> the tool's JSON result so far."""

    def __init__(self, workflow: Workflow) -> None:
        self.workflow = workflow

    def decide(self, step: int, results: Mapping[str, Any]) -> Decision:
        n_tools = len(COMPANY_TOOLS)
        cs = self.workflow.companies
        if step < len(cs) * n_tools:
            c = cs[step // n_tools]
            tool = COMPANY_TOOLS[step % n_tools]
            return Decision(step, c.name, tool, self._args(tool, c.name, results))
        if step == len(cs) * n_tools:
            return Decision(step, None, FINAL_TOOL, {"plan": self._plan(results)})
        return Decision(step, None, None, {})

    def _args(self, tool: str, company: str, results: Mapping[str, Any]) -> dict[str, Any]:
        if tool in ("fetch_annual_report", "extract_figures"):
            return {"company": company}
        last = results[f"extract_figures:{company}"]["EUR m, last year"]
        if tool == "run_monte_carlo":
            return {
                "company": company,
                "assets": last["Plan assets"],
                "liabilities": last["Obligations"],
                "contribution": last["Contributions"],
            }
        return {"expression": f"{last['Plan assets']} / {last['Obligations']}"}

    def _plan(self, results: Mapping[str, Any]) -> str:
        lines = ["Masterplan"]
        for c in self.workflow.companies:
            last = results[f"extract_figures:{c.name}"]["EUR m, last year"]
            mc = results[f"run_monte_carlo:{c.name}"]
            lines.append(
                f"{c.name}: revenue {fmt(last['Revenue'])}, EBITDA {fmt(last['EBITDA'])}, "
                f"plan assets {fmt(last['Plan assets'])}, obligations {fmt(last['Obligations'])}, "
                f"P(underfunded in {mc['years']} years) {mc['prob_underfunded']:.1%}"
            )
        return "\n".join(lines)


def workflow_facts(text: str, max_chars: int) -> str:
    """Deterministic key facts of one of the workflow's tool outputs, at most ``max_chars``
    characters: a report's or ``extract_figures``' last-year figures on one line; any other
    output by :func:`kvlab.agents.budget.key_lines`."""
    from kvlab.agents.budget import key_lines

    last: dict[str, float] | None = None
    name = ""
    tables = parse_tables(text) if "| EUR m |" in text else []
    if tables:
        last = {k: v[-1] for k, v in tables[0].items()}
        name = text.split(" Group - ", 1)[0] if " Group - " in text else ""
    elif text.startswith("{"):
        try:
            data = json.loads(text)
        except ValueError:
            data = None
        if isinstance(data, dict) and isinstance(data.get("EUR m, last year"), dict):
            last, name = data["EUR m, last year"], str(data.get("company", ""))
        elif isinstance(data, dict) and "prob_underfunded" in data:
            return (
                f"{data.get('company')} Monte Carlo ({data.get('runs')} runs, "
                f"{data.get('years')} years): P(underfunded) {data['prob_underfunded']}, "
                f"median funded ratio {data.get('p50_ratio')}"
            )[:max_chars]
    if last is None:
        return key_lines(text, max_chars)
    body = "; ".join(f"{k} {fmt(float(v))}" for k, v in last.items())
    return f"{name} {YEARS[-1]} (EUR m): {body}"[:max_chars]


def fact_retention(facts: Mapping[str, float], text: str) -> float:
    """The share of ``facts`` (label -> value) whose value appears in ``text``, as the
    reports print it (``12,345.6``) or as JSON writes it (``12345.6``)."""
    if not facts:
        return 1.0
    kept = sum(1 for v in facts.values() if fmt(v) in text or repr(float(v)) in text)
    return kept / len(facts)
