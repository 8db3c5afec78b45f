"""``stress.md``: the tables of a stress run, from its ``stress.json`` dictionary."""

from __future__ import annotations

from typing import Any


def _f(x: Any, nd: int = 2, pct: bool = False) -> str:
    if x is None:
        return "-"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if pct:
        return f"{100 * x:.{nd}f}%"
    if isinstance(x, float):
        return f"{x:,.{nd}f}"
    return f"{x:,}" if isinstance(x, int) else str(x)


def _table(head: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return [*out, ""]


def _seq(n: int) -> str:
    return f"{n // 1024}k" if n % 1024 == 0 else f"{n:,}"


def markdown(d: dict[str, Any]) -> str:
    if d.get("mode") == "live":
        return live_markdown(d)
    slo = d["slo"]
    lines = [
        "# kvlab stress",
        "",
        f"matrix: {d['matrix']}; clock: roofline, uncalibrated (simulated figures)",
        "",
        f"SLOs: TTFT p99 <= {slo['ttft_p99_s']:g} s, TPOT p99 <= {slo['tpot_p99_s']:g} s, "
        f"preemptions <= {slo['max_preemptions']}, peak KV usage <= {slo['max_kv_usage']:.0%}; "
        f"warning above {slo['warn_fraction']:.0%} of a limit.",
        "",
        f"{d['num_sim_runs']:,} simulator runs. Verdicts: "
        + ", ".join(f"{v} {k}" for k, v in d["verdicts"].items()),
        "",
    ]
    if d.get("interrupted"):
        lines += ["**Interrupted**: the tables hold what finished before Ctrl-C.", ""]
    if d["scenarios"]:
        lines += ["## Scenarios", ""]
        rows = []
        for r in d["scenarios"]:
            s, m = r["scenario"], r["metrics"]
            rows.append(
                [
                    s["name"],
                    s["model"].split("/")[-1],
                    f"{s['batch']}x{s['concurrency']}"
                    + (f"x{s['rounds']}" if s["rounds"] > 1 else ""),
                    f"{_seq(s['seq_len'])}+{s['gen_len']}",
                    r["verdict"].upper(),
                    _f(_gb(m.get("kv_demand_bytes"))),
                    _f(_gb(m.get("kv_capacity_bytes"))),
                    _f(_gb(m.get("kv_peak_bytes"))),
                    _f(m.get("kv_peak_usage"), 1, True),
                    _f(m.get("num_never_fit")),
                    _f(m.get("prefix_cache_hit_rate"), 1, True),
                    _f(m.get("num_evicted_blocks")),
                    _f(m.get("num_preemptions")),
                    f"{_f(m.get('ttft_p50_s'))} / {_f(m.get('ttft_p99_s'))}",
                    _f(m.get("tpot_p99_s"), 4),
                    _f(m.get("output_throughput_tok_per_s"), 0),
                    _f(m.get("goodput_req_per_s")),
                    r["risk"],
                    "; ".join(r["reasons"]),
                ]
            )
        lines += _table(
            [
                "scenario",
                "model",
                "batch x conc",
                "prompt+gen",
                "verdict",
                "KV demand GB",
                "KV pool GB",
                "KV peak GB",
                "peak usage",
                "never fit",
                "hit rate",
                "evicted blocks",
                "preemptions",
                "TTFT p50 / p99 s",
                "TPOT p99 s",
                "out tok/s",
                "goodput req/s",
                "risk",
                "reasons",
            ],
            rows,
        )
    if d.get("old_report"):
        lines += [
            "## Beside the old report",
            "",
            "Claims are the old report's; every other column is computed.",
            "",
        ]
        rows = []
        for o in d["old_report"]:
            c = o["claimed"]
            rows.append(
                [
                    o["name"],
                    f"{_f(c.get('peak_kv_gb'))} / {_f(c.get('util_pct'))}%",
                    _f(o["claimed_bytes_per_token"], 0),
                    _f(o["kv_bytes_per_token"]),
                    _f(o["claimed_denominator_gb"], 1),
                    _f(o["kv_capacity_gb"]),
                    _f(o["kv_demand_gb"]),
                    f"{_f(o['kv_peak_gb'])} / {_f(o['kv_peak_usage'], 1, True)}",
                    f"{_f(c.get('hit_rate_pct'))}%",
                    _f(o["prefix_cache_hit_rate"], 1, True),
                    f"{_f(c.get('evict_pct'))}%",
                    _f(o["num_evicted_blocks"]),
                    _f(o["num_preemptions"]),
                    str(c.get("verdict", "-")),
                    o["verdict"].upper(),
                ]
            )
        lines += _table(
            [
                "scenario",
                "claimed peak GB / util",
                "claimed B/token",
                "real B/token",
                "claimed pool GB",
                "real pool GB",
                "real demand GB",
                "sim peak GB / usage",
                "claimed hit",
                "sim hit",
                "claimed evict",
                "sim evicted blocks",
                "preemptions",
                "old verdict",
                "kvlab verdict",
            ],
            rows,
        )
    if d["ranges"]:
        lines += ["## Safe operating ranges", ""]
        for kind, title in (
            ("batch", "Safe max batch by sequence length"),
            ("concurrency", "Concurrency limits"),
        ):
            rows = []
            for r in d["ranges"]:
                if r["kind"] != kind:
                    continue
                rows.append(
                    [
                        r["model"].split("/")[-1],
                        r["gpu"],
                        _seq(r["seq_len"]),
                        f"{r['best']}{'+' if r['capped'] else ''}",
                        _f(r["num_runs"]),
                        "yes" if r["monotone"] else "NO: " + "; ".join(r["violations"]),
                        r["limit_reason"] or "-",
                    ]
                )
            if rows:
                lines += [f"### {title}", ""]
                lines += _table(
                    [
                        "model",
                        "GPU",
                        "prompt",
                        f"max {kind}",
                        "sim runs",
                        "monotone",
                        "what fails next",
                    ],
                    rows,
                )
    for c in d["curves"]:
        lines += [
            f"## Degradation: {c['model']} on {c['gpu']}, "
            f"{_seq(c['seq_len'])}+{c['gen_len']} tokens, {c['num_requests']} requests "
            "per point (Poisson)",
            "",
        ]
        b = c["bands"]
        lines += [
            f"Knee (TTFT p99 doubles): {_f(c['knee_rate_per_s'])} req/s; saturation: "
            f"{_f(c['saturation_rate_per_s'])} req/s. Bands of mean KV usage: safe below "
            f"{_f(b.get('warning_from_kv_usage'), 1, True)}, warning from there, danger from "
            f"{_f(b.get('danger_from_kv_usage'), 1, True)}."
            + (" " + "; ".join(c["notes"]) + "." if c["notes"] else ""),
            "",
        ]
        lines += _table(
            [
                "offered req/s",
                "done req/s",
                "out tok/s",
                "TTFT p99 s",
                "TPOT p99 s",
                "preempt/req",
                "KV mean",
                "KV peak",
                "kept up",
            ],
            [
                [
                    _f(p["offered_per_s"]),
                    _f(p["request_throughput_per_s"]),
                    _f(p["output_throughput_tok_per_s"], 0),
                    _f(p["ttft_p99_s"], 3),
                    _f(p["tpot_p99_s"], 4),
                    _f(p["preemptions_per_request"], 3),
                    _f(p["kv_mean_usage"], 1, True),
                    _f(p["kv_peak_usage"], 1, True),
                    "yes" if p["kept_up"] else "no",
                ]
                for p in c["points"]
            ],
        )
    if d["whatifs"]:
        lines += ["## What-ifs", "", "`N+`: every value up to the search cap passed.", ""]
        lines += [
            f"- {w['before_run']['model']} on {w['before_run']['gpu']}: {w['line']}"
            for w in d["whatifs"]
        ]
        lines.append("")
    if d["presets"]:
        lines += ["## Presets", ""]
        for p in d["presets"]:
            lines += [
                f"### {p['name']}: {p['model']} on {p['gpu']}",
                "",
                f"- concurrency limit {p['concurrency_limit']} (max_num_seqs), "
                f"max_num_batched_tokens {p['max_num_batched_tokens']}, KV dtype "
                f"{p['kv_dtype'] or 'model'}, prompt {p['seq_len']:,} tokens; risk {p['risk']} "
                f"({'; '.join(p['risk_reasons'])})",
                f"- evidence ({p['num_runs']} runs): {p['evidence']}",
            ]
            if p["vllm_serve"]:
                lines += ["", "```", p["vllm_serve"], "```"]
            lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def _cmp(x: Any, kind: str) -> str:
    if x is None:
        return "-"
    if kind == "pct":
        return f"{100 * x:.1f}%"
    if kind == "s":
        return f"{x:.3f}"
    if kind == "rate":
        return f"{x:,.1f}"
    if isinstance(x, float) and x.is_integer():
        x = int(x)
    return f"{x:,}" if isinstance(x, int) else _f(x)


def live_markdown(d: dict[str, Any]) -> str:
    """``stress.md`` of ``kvlab stress --endpoint``: the server, the scaling of every
    scenario, and the real (measured) and simulated figures side by side."""
    from kvlab.stress.live import COMPARED

    slo, lv = d["slo"], d["live"]
    srv = lv["server"]
    lines = [
        "# kvlab stress (live)",
        "",
        f"matrix: {d['matrix']}; server {srv['endpoint']} ({srv['kind']}), model "
        f"{srv['model']}: max_model_len {srv['max_model_len']:,}, {srv['num_gpu_blocks']:,} "
        f"KV blocks of {srv['block_size']} tokens ({srv['kv_tokens']:,} usable tokens), "
        f"prefix caching {'on' if srv['enable_prefix_caching'] else 'off'}; max_num_seqs "
        f"{lv['max_num_seqs'] or 'the simulator default'} in the simulation.",
        "",
        f"SLOs: TTFT p99 <= {slo['ttft_p99_s']:g} s, TPOT p99 <= {slo['tpot_p99_s']:g} s, "
        f"preemptions <= {slo['max_preemptions']}, peak KV usage <= {slo['max_kv_usage']:.0%}. "
        "Real verdicts from the measured figures, simulated ones from the simulator's.",
        "",
        "Verdicts (real): " + ", ".join(f"{v} {k}" for k, v in d["verdicts"].items()),
        "",
        f"Note: {lv['latency_note']}.",
        "",
    ]
    if d.get("interrupted"):
        lines += [
            "**Interrupted**: finished scenarios kept; not run: "
            + (", ".join(lv["not_run"]) or "none"),
            "",
        ]
    if lv.get("server_down"):
        lines += [f"**Server down**: {lv['server_down']}", ""]
    lines += ["## Scaling", "", f"Rule: {lv['scaling_rule']}.", ""]
    lines += [f"- {r['scaling']['line']}" for r in lv["scenarios"]]
    lines.append("")
    if lv["scenarios"]:
        lines += ["## Sim vs real", ""]
        head = ["scenario", "shape", "verdict real / sim"]
        head += [label + " real / sim" for _, label, _ in COMPARED]
        rows = []
        for r in lv["scenarios"]:
            sc = r["scaled"]
            shape = (
                "-"
                if sc is None
                else (f"{sc['batch']}x{sc['concurrency']} x ({sc['seq_len']}+{sc['gen_len']})")
            )
            real, sim = r["real"], r["sim"]
            row = [
                r["name"],
                shape,
                f"{r['verdict'].upper()} / {(r['sim_verdict'] or '-').upper()}",
            ]
            row += [
                f"{_cmp(real.get(k), kind)} / {_cmp(sim.get(k), kind)}" for k, _, kind in COMPARED
            ]
            rows.append(row)
        lines += _table(head, rows)
        lines += ["## Server metrics per scenario", ""]
        rows = []
        for r in lv["scenarios"]:
            m = r["real"]
            rows.append(
                [
                    r["name"],
                    r["status"],
                    _cmp(m.get("kv_peak_usage"), "pct"),
                    _cmp(m.get("kv_mean_usage"), "pct"),
                    _cmp(m.get("num_preemptions"), "int"),
                    _cmp(m.get("prefix_cache_queries"), "int"),
                    _cmp(m.get("prefix_cache_hits"), "int"),
                    _cmp(m.get("num_waiting_max"), "int"),
                    _f(m.get("num_waiting_mean")),
                    _cmp(m.get("num_metrics_samples"), "int"),
                    f"{m.get('num_completed', '-')}/{m.get('num_requests', '-')}",
                ]
            )
        lines += _table(
            [
                "scenario",
                "status",
                "KV usage max",
                "KV usage mean",
                "preemptions",
                "prefix queries",
                "prefix hits",
                "waiting max",
                "waiting mean",
                "samples",
                "completed",
            ],
            rows,
        )
        lines += ["## Reasons", ""]
        for r in lv["scenarios"]:
            lines.append(f"- {r['name']}: real {r['verdict'].upper()}: {'; '.join(r['reasons'])}")
            if r["sim_verdict"]:
                lines.append(f"  sim {r['sim_verdict'].upper()}: {'; '.join(r['sim_reasons'])}")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def _gb(x: Any) -> float | None:
    return None if x is None else x / 1e9
