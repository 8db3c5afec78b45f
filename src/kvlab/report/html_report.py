"""``kvlab report``: one self-contained HTML file (plus Markdown and JSON) for run directories.

Reads any mix of directories kvlab writes, through :mod:`kvlab.results` for runs:

* a run (``summary.json``: ``kvlab simulate``, ``kvlab replay``, the in-process backend):
  its summary, per-class breakdown, KV/queue timeline and latency histograms;
* a stress run (``stress.json``): its tables, plus safe-range and degradation figures;
* a sweep (``sweep.json``) and a bench experiment (``experiment.json`` with ``runs/*``);
* a file: a ``kvlab monitor --record`` file (:mod:`kvlab.monitor.record`), one section
  per server with its summary table and timelines, alerts marked on the time axis.

Two or more runs also get a comparison table (deltas against the first). The HTML has
no script, no stylesheet or font link and no image URL: figures are inline SVG drawn
by matplotlib (:mod:`kvlab.report.svg`), series thinned to a fixed number of points, so
the file opens offline and its size does not grow with a run's length. The same
figures are written as PNG and SVG into ``<name>_figures/``, and the same content as
``<name>.md`` and ``<name>.json`` beside the HTML.
"""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kvlab.errors import RunDirError

#: Summary figures shown for a run and compared across runs: (label, key, sub-key).
RUN_FIGURES: tuple[tuple[str, str, str | None], ...] = (
    ("requests", "num_requests", None),
    ("completed", "num_completed", None),
    ("rejected", "num_rejected", None),
    ("failed", "num_failed", None),
    ("prefix hit rate", "prefix_cache_hit_rate", None),
    ("preemptions", "num_preemptions", None),
    ("evicted blocks", "num_evicted_blocks", None),
    ("KV usage max", "kv_cache_usage_perc_max", None),
    ("KV usage mean", "kv_cache_usage_perc_mean", None),
    ("TTFT p50 s", "ttft_s", "p50"),
    ("TTFT p99 s", "ttft_s", "p99"),
    ("TPOT p50 s", "tpot_s", "p50"),
    ("TPOT p99 s", "tpot_s", "p99"),
    ("E2E p50 s", "e2e_s", "p50"),
    ("E2E p99 s", "e2e_s", "p99"),
    ("requests/s", "request_throughput_per_s", None),
    ("output tok/s", "output_throughput_tok_per_s", None),
    ("duration s", "simulated_duration_s", None),
)

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;
max-width:1200px;padding:0 1rem;color:#1d2330;line-height:1.45}
h1{font-size:1.6rem}h2{font-size:1.3rem;border-bottom:1px solid #ccd;padding-bottom:.2rem;
margin-top:2.2rem}h3{font-size:1.1rem}
table{border-collapse:collapse;margin:.6rem 0 1.2rem;font-size:.82rem;display:block;
overflow-x:auto}th,td{border:1px solid #d5d9e2;padding:.2rem .45rem;text-align:right;
white-space:nowrap}th{background:#eef1f6}td:first-child,th:first-child{text-align:left}
tr:nth-child(even) td{background:#f8f9fb}
.fail{color:#b00020;font-weight:600}.warn{color:#a86400;font-weight:600}
.pass{color:#0a7a33;font-weight:600}figure{margin:1rem 0}svg{max-width:100%;height:auto}
pre{background:#f3f4f7;padding:.6rem;overflow-x:auto;font-size:.8rem}
code{background:#f3f4f7;padding:0 .2rem}.meta{color:#5a6170;font-size:.85rem}
"""


@dataclass
class Source:
    """One input directory: its ``kind`` (run, stress, sweep, bench) and what was read."""

    path: Path
    kind: str
    data: Any
    runs: list[tuple[str, Any]] = field(default_factory=list)


@dataclass
class Page:
    """The report as it is built: HTML body parts, Markdown lines, JSON, figures."""

    html: list[str] = field(default_factory=list)
    md: list[str] = field(default_factory=list)
    figures: list[Path] = field(default_factory=list)


def read_source(path: str | Path) -> Source:
    """Read one directory; RunDirError names it when it is none of the kinds."""
    from kvlab.results import RunResult

    p = Path(path)
    if p.is_file():  # a monitor record file (kvlab monitor --record)
        from kvlab.monitor.record import read_record

        return Source(p, "monitor", read_record(p))
    if not p.is_dir():
        raise RunDirError("not a directory", path=p)
    if (p / "stress.json").exists():
        return Source(p, "stress", _json(p / "stress.json"))
    if (p / "sweep.json").exists():
        return Source(p, "sweep", _json(p / "sweep.json"))
    if (p / "experiment.json").exists():
        runs = [
            (d.name, RunResult.load(d))
            for d in sorted((p / "runs").glob("*"))
            if (d / "summary.json").exists()
        ]
        return Source(p, "bench", _json(p / "experiment.json"), runs)
    if (p / "summary.json").exists():
        return Source(p, "run", RunResult.load(p))
    raise RunDirError(
        "not a kvlab run directory (no summary.json, stress.json, sweep.json or experiment.json)",
        path=p,
    )


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise RunDirError(f"not JSON: {e.msg}", path=path, line=e.lineno) from None
    except (OSError, UnicodeDecodeError) as e:
        raise RunDirError(f"cannot read: {e}", path=path) from None


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        if v != 0 and abs(v) < 0.01:
            return f"{v:.4g}"
        return f"{v:,.3f}" if abs(v) < 100 else f"{v:,.1f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def _figure(summary: dict[str, Any], key: str, sub: str | None) -> Any:
    v = summary.get(key)
    if sub is not None:
        v = v.get(sub) if isinstance(v, dict) else None
    return v


def _table(page: Page, head: list[str], rows: list[list[Any]]) -> None:
    cells = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    body = []
    for r in rows:
        tds = []
        for v in r:
            text = _fmt(v)
            cls = f' class="{text.lower()}"' if text.lower() in ("pass", "warn", "fail") else ""
            tds.append(f"<td{cls}>{html.escape(text)}</td>")
        body.append("<tr>" + "".join(tds) + "</tr>")
    page.html.append(f"<table><tr>{cells}</tr>{''.join(body)}</table>")
    page.md += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    page.md += ["| " + " | ".join(_fmt(v) for v in r) + " |" for r in rows]
    page.md.append("")


def _heading(page: Page, level: int, text: str) -> None:
    page.html.append(f"<h{level}>{html.escape(text)}</h{level}>")
    page.md += ["#" * level + " " + text, ""]


def _para(page: Page, text: str) -> None:
    page.html.append(f"<p>{html.escape(text)}</p>")
    page.md += [text, ""]


def _svg(page: Page, svg: str, name: str, fig_dir: Path, caption: str) -> None:
    page.html.append(
        f"<figure>{svg}<figcaption class='meta'>{html.escape(caption)}</figcaption></figure>"
    )
    png = fig_dir / f"{name}.png"
    page.figures += [png, png.with_suffix(".svg")]
    page.md += [f"![{caption}]({fig_dir.name}/{png.name})", ""]


def _slug(text: str) -> str:
    import re

    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:60] or "x"


# ------------------------------------------------------------------ sections


def _run_section(page: Page, label: str, run: Any, fig_dir: Path) -> None:
    from kvlab.report import svg

    s = run.summary
    _heading(page, 2, f"Run: {label}")
    prov = run.provenance
    _para(
        page,
        f"backend {prov.get('backend') or run.backend or '-'}; model "
        f"{run.config.get('model', '-')}; GPU {run.config.get('gpu', '-')}; clock "
        f"{s.get('clock') or '-'}; prefix figures from {s.get('prefix_cache_source') or '-'}",
    )
    _table(page, ["figure", "value"], [[lab, _figure(s, k, sub)] for lab, k, sub in RUN_FIGURES])
    by_class = s.get("by_class") or {}
    if len(by_class) > 1:
        _heading(page, 3, "By request class")
        _table(
            page,
            ["class", "requests", "hit rate", "TTFT p50 s", "TTFT p99 s", "E2E p99 s"],
            [
                [
                    c,
                    g.get("num_requests"),
                    g.get("prefix_cache_hit_rate"),
                    _figure(g, "ttft_s", "p50"),
                    _figure(g, "ttft_s", "p99"),
                    _figure(g, "e2e_s", "p99"),
                ]
                for c, g in by_class.items()
            ],
        )
    ts = run.timeseries
    t = ts.get("t_s") or []
    slug = _slug(label)
    if t:
        left = {
            k: (t, ts[k])
            for k in ("kv_cache_usage_perc", "kv_cache_usage_with_cached_perc")
            if ts.get(k)
        }
        right = {
            k: (t, ts[k]) for k in ("num_requests_running", "num_requests_waiting") if ts.get(k)
        }
        if left or right:
            _svg(
                page,
                svg.lines(
                    left,
                    right=right,
                    right_label="requests",
                    title=f"{label}: KV usage and queue over time",
                    xlabel="time s",
                    ylabel="KV usage (0-1)",
                    files=fig_dir / f"{slug}-timeline",
                ),
                f"{slug}-timeline",
                fig_dir,
                "KV usage (vLLM's, and with cached blocks) and "
                "running / waiting requests over time",
            )
    ttft = [r.ttft_s for r in run.records if r.ttft_s is not None]
    e2e = [r.e2e_s for r in run.records if r.e2e_s is not None]
    if ttft or e2e:
        _svg(
            page,
            svg.histogram(
                {"TTFT": ttft, "E2E": e2e},
                title=f"{label}: latency",
                xlabel="seconds",
                files=fig_dir / f"{slug}-latency",
            ),
            f"{slug}-latency",
            fig_dir,
            "Distribution of TTFT and end-to-end latency",
        )


def _compare_section(page: Page, runs: list[tuple[str, Any]]) -> None:
    _heading(page, 2, "Comparison (deltas against the first run)")
    head = ["figure", runs[0][0]]
    for name, _ in runs[1:]:
        head += [name, "delta"]
    rows = []
    for lab, k, sub in RUN_FIGURES:
        base = _figure(runs[0][1].summary, k, sub)
        row: list[Any] = [lab, base]
        for _, r in runs[1:]:
            v = _figure(r.summary, k, sub)
            delta = None
            if isinstance(v, int | float) and isinstance(base, int | float):
                delta = f"{(v - base) / base:+.1%}" if base else _fmt(v - base)
            row += [v, delta]
        rows.append(row)
    _table(page, head, rows)


def _stress_section(page: Page, src: Source, fig_dir: Path) -> None:
    from kvlab.report import svg
    from kvlab.stress.render import markdown

    d = src.data
    _heading(page, 2, f"Stress: {src.path.name}")
    md = markdown(d)
    page.html.append(md_to_html(md.split("\n", 1)[1]))  # without its own title
    page.md += md.split("\n")[1:]
    slug = _slug(src.path.name)
    for kind in ("batch", "concurrency"):
        series: dict[str, tuple[list[float], list[float]]] = {}
        for r in d.get("ranges", []):
            if r["kind"] == kind:
                name = r["model"].split("/")[-1] + " on " + r["gpu"]
                xs, ys = series.setdefault(name, ([], []))
                xs.append(r["seq_len"])
                ys.append(r["best"])
        if series:
            _svg(
                page,
                svg.lines(
                    series,
                    title=f"safe max {kind} by prompt length",
                    xlabel="prompt tokens",
                    ylabel=f"max {kind}",
                    logx=True,
                    markers=True,
                    files=fig_dir / f"{slug}-safe-{kind}",
                ),
                f"{slug}-safe-{kind}",
                fig_dir,
                f"Safe max {kind} found by the search",
            )
    for c in d.get("curves", []):
        pts = c["points"]
        if not pts:
            continue
        x = [p["offered_per_s"] for p in pts]
        name = f"{slug}-curve-{_slug(c['model'])}"
        _svg(
            page,
            svg.lines(
                {"output tok/s": (x, [p["output_throughput_tok_per_s"] for p in pts])},
                right={"TTFT p99 s": (x, [p["ttft_p99_s"] for p in pts])},
                right_label="TTFT p99 s",
                markers=True,
                title=f"{c['model']} on {c['gpu']}: degradation with offered load",
                xlabel="offered requests/s",
                ylabel="output tok/s",
                files=fig_dir / name,
            ),
            name,
            fig_dir,
            "Throughput and TTFT p99 as the offered rate rises to saturation",
        )
        u = [p["kv_mean_usage"] for p in pts]
        _svg(
            page,
            svg.lines(
                {"output tok/s": (u, [p["output_throughput_tok_per_s"] for p in pts])},
                right={"TTFT p99 s": (u, [p["ttft_p99_s"] for p in pts])},
                right_label="TTFT p99 s",
                markers=True,
                title=f"{c['model']} on {c['gpu']}: against mean KV usage",
                xlabel="mean KV usage (0-1)",
                ylabel="output tok/s",
                files=fig_dir / f"{name}-kv",
            ),
            f"{name}-kv",
            fig_dir,
            "The same points against mean KV usage",
        )


def _monitor_section(page: Page, src: Source, fig_dir: Path) -> None:
    """A record file: per server, the summary table and the stacked timelines with
    the alert events marked on the time axis."""
    from kvlab.monitor.record import FIGURES, format_figure, summarize
    from kvlab.report import svg
    from kvlab.report.recordings import alert_marks, labelled, panel_rows

    rec = src.data
    _heading(page, 2, f"Monitor recording: {src.path.name}")
    if rec.note:
        _para(page, f"Note: {rec.note}")
    for label, _, srv in labelled([rec]):
        fig = summarize(srv)
        _heading(page, 3, f"{srv.url} ({fig['server'] or 'never read'})")
        _table(
            page,
            ["figure", "value"],
            [[lab, format_figure(k, fig[k])] for k, lab in FIGURES],
        )
        if srv.alerts:
            _table(
                page,
                ["time (UTC)", "s from start", "event", "rule", "value", "threshold"],
                [
                    [
                        _utc(a.t_unix),
                        a.t_unix - srv.samples[0].t_unix,
                        a.event,
                        a.rule,
                        a.value,
                        a.threshold,
                    ]
                    for a in srv.alerts
                ],
            )
        rows = panel_rows(srv)
        if rows:
            name = f"{_slug(label)}-monitor"
            _svg(
                page,
                svg.panels(
                    rows,
                    title=f"{srv.url}: monitored over time",
                    xlabel="seconds since the first sample",
                    marks=alert_marks(srv),
                    files=fig_dir / name,
                ),
                name,
                fig_dir,
                "KV usage, prefix hit rate per interval, preemptions/s, running/waiting "
                "requests and TTFT/ITL p99 per interval; dotted lines: alerts fired (red) "
                "and resolved (green); breaks: the server could not be read",
            )


def _utc(t: float) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def _sweep_section(page: Page, src: Source) -> None:
    _heading(page, 2, f"Sweep: {src.path.name}")
    rows = src.data.get("rows") or []
    if not rows:
        _para(page, "no rows")
        return
    head = list(rows[0])
    _table(page, head, [[r.get(h) for h in head] for r in rows])


def _bench_section(page: Page, src: Source, fig_dir: Path) -> list[tuple[str, Any]]:
    _heading(page, 2, f"Bench: {src.path.name}")
    meta = {k: v for k, v in src.data.items() if not isinstance(v, dict | list)}
    _table(page, ["field", "value"], [[k, v] for k, v in meta.items()])
    return [(f"{src.path.name}/{n}", r) for n, r in src.runs]


def md_to_html(md: str) -> str:
    """HTML for the Markdown subset kvlab writes: headings, tables, lists, fences, text."""
    out: list[str] = []
    lines = md.split("\n")
    i = 0

    def inline(t: str) -> str:
        import re

        t = html.escape(t)
        t = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", t)
        return re.sub(r"`(.+?)`", r"<code>\1</code>", t)

    while i < len(lines):
        line = lines[i]
        if line.startswith("```"):
            j = i + 1
            while j < len(lines) and not lines[j].startswith("```"):
                j += 1
            out.append("<pre>" + html.escape("\n".join(lines[i + 1 : j])) + "</pre>")
            i = j + 1
        elif line.startswith("#"):
            level = min(6, len(line) - len(line.lstrip("#")) + 1)
            out.append(f"<h{level}>{inline(line.lstrip('#').strip())}</h{level}>")
            i += 1
        elif line.startswith("|"):
            rows = []
            while i < len(lines) and lines[i].startswith("|"):
                rows.append([c.strip() for c in lines[i].strip().strip("|").split("|")])
                i += 1
            head, body = rows[0], [r for r in rows[1:] if not all(set(c) <= {"-"} for c in r)]
            cells = "".join(f"<th>{inline(c)}</th>" for c in head)
            trs = []
            for r in body:
                tds = []
                for c in r:
                    cls = f' class="{c.lower()}"' if c.lower() in ("pass", "warn", "fail") else ""
                    tds.append(f"<td{cls}>{inline(c)}</td>")
                trs.append("<tr>" + "".join(tds) + "</tr>")
            out.append(f"<table><tr>{cells}</tr>{''.join(trs)}</table>")
        elif line.startswith("- "):
            items = []
            while i < len(lines) and lines[i].startswith("- "):
                items.append(f"<li>{inline(lines[i][2:])}</li>")
                i += 1
            out.append("<ul>" + "".join(items) + "</ul>")
        elif line.strip():
            out.append(f"<p>{inline(line)}</p>")
            i += 1
        else:
            i += 1
    return "\n".join(out)


@dataclass(frozen=True)
class ReportFiles:
    html: Path
    markdown: Path
    json: Path
    figures: tuple[Path, ...]


def build_report(
    dirs: Sequence[str | Path], out: str | Path, *, title: str | None = None
) -> ReportFiles:
    """Write ``out`` (HTML), ``out``.md, ``out``.json and ``<stem>_figures/``."""
    from kvlab import __version__
    from kvlab.results import atomic_write_text

    if not dirs:
        raise RunDirError("give at least one run directory")
    sources = [read_source(d) for d in dirs]
    out_p = Path(out)
    out_p.parent.mkdir(parents=True, exist_ok=True)
    fig_dir = out_p.parent / f"{out_p.stem}_figures"
    fig_dir.mkdir(exist_ok=True)
    page = Page()
    name = title or "kvlab report"
    _para(
        page,
        f"kvlab {__version__}; {len(sources)} source(s): "
        + ", ".join(f"{s.path} ({s.kind})" for s in sources),
    )
    _table(
        page,
        ["source", "kind", "requests", "TTFT p99 s", "prefix hit rate", "preemptions"],
        [_overview_row(s) for s in sources],
    )
    runs: list[tuple[str, Any]] = []
    for s in sources:
        if s.kind == "run":
            runs.append((s.path.name, s.data))
        elif s.kind == "bench":
            runs += _bench_section(page, s, fig_dir)
        elif s.kind == "stress":
            _stress_section(page, s, fig_dir)
        elif s.kind == "sweep":
            _sweep_section(page, s)
        elif s.kind == "monitor":
            _monitor_section(page, s, fig_dir)
    if len(runs) >= 2:
        _compare_section(page, runs)
    for label, run in runs:
        _run_section(page, label, run, fig_dir)
    doc = (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width,initial-scale=1'>"
        f"<title>{html.escape(name)}</title><style>{CSS}</style></head><body>"
        f"<h1>{html.escape(name)}</h1>\n" + "\n".join(page.html) + "\n</body></html>\n"
    )
    html_path = out_p
    md_path = out_p.with_suffix(".md")
    json_path = out_p.with_suffix(".json")
    atomic_write_text(html_path, doc)
    atomic_write_text(md_path, f"# {name}\n\n" + "\n".join(page.md).rstrip() + "\n")
    atomic_write_text(
        json_path, json.dumps(_report_json(sources, runs), indent=1, default=str) + "\n"
    )
    return ReportFiles(html_path, md_path, json_path, tuple(page.figures))


def _overview_row(s: Source) -> list[Any]:
    if s.kind == "run":
        sm = s.data.summary
        return [
            str(s.path),
            s.kind,
            sm.get("num_requests"),
            _figure(sm, "ttft_s", "p99"),
            sm.get("prefix_cache_hit_rate"),
            sm.get("num_preemptions"),
        ]
    if s.kind == "stress":
        v = s.data.get("verdicts", {})
        live = s.data.get("live")  # kvlab stress --endpoint: its scenarios are live ones
        scen = live["scenarios"] if isinstance(live, dict) else s.data.get("scenarios", [])
        return [
            str(s.path),
            "stress (live)" if live else "stress",
            f"{len(scen)} scenarios",
            None,
            None,
            f"pass {v.get('pass', 0)} / warn {v.get('warn', 0)} / fail {v.get('fail', 0)}",
        ]
    if s.kind == "monitor":
        from kvlab.monitor.record import summarize

        sums = [summarize(v) for v in s.data.servers.values() if v.samples]
        pre = [x["preemptions"] for x in sums if x["preemptions"] is not None]
        return [
            str(s.path),
            "monitor",
            f"{sum(x['samples'] for x in sums)} samples, {len(sums)} server(s)",
            max(
                (x["ttft_p99_s_max"] for x in sums if x["ttft_p99_s_max"] is not None),
                default=None,
            ),
            sums[0]["prefix_hit_rate"] if len(sums) == 1 else None,
            int(sum(pre)) if pre and float(sum(pre)).is_integer() else (sum(pre) if pre else None),
        ]
    n = len(s.data.get("rows", [])) if s.kind == "sweep" else len(s.runs)
    return [str(s.path), s.kind, f"{n} points", None, None, None]


def _report_json(sources: list[Source], runs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {"sources": []}
    for s in sources:
        entry: dict[str, Any] = {"path": str(s.path), "kind": s.kind}
        if s.kind == "run":
            entry["summary"] = s.data.summary
        elif s.kind == "bench":
            entry["experiment"] = s.data
            entry["runs"] = {n: r.summary for n, r in s.runs}
        elif s.kind == "monitor":
            from kvlab.report.recordings import compare_recordings

            entry["monitor"] = compare_recordings([s.data])
        else:
            entry["data"] = s.data
        out["sources"].append(entry)
    if len(runs) >= 2:
        out["compare"] = [
            {"figure": lab, "values": {n: _figure(r.summary, k, sub) for n, r in runs}}
            for lab, k, sub in RUN_FIGURES
        ]
    return out
