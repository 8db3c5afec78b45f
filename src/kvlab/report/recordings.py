"""Monitor record files (``kvlab monitor --record``) in ``kvlab report`` and ``kvlab compare``.

One column (or report section) per server of each record file, labelled by the file
name, plus the server's ``host:port`` when a file holds several servers. Figures
come from :func:`kvlab.monitor.record.summarize`; a figure a recording does not
know is ``-``, never 0. The comparison is a plain dict (JSON-ready): the labels,
each figure's values in label order, its unit-bearing label, and the files' notes
(a truncated last line).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from kvlab.monitor.record import FIGURES, Recording, format_figure, summarize


def _host(url: str) -> str:
    rest = url.split("://", 1)[-1]
    return rest.split("/", 1)[0]


def labelled(recordings: Sequence[Recording]) -> list[tuple[str, Recording, Any]]:
    """(label, recording, server) for every server of every recording, in order."""
    names = [r.path.name for r in recordings]
    use_full = len(set(names)) != len(names)
    out = []
    for r in recordings:
        base = str(r.path) if use_full else r.path.name
        for srv in r.servers.values():
            if not srv.samples:
                continue
            label = base if len(r.servers) == 1 else f"{base} {_host(srv.url)}"
            out.append((label, r, srv))
    return out


def compare_recordings(recordings: Sequence[Recording]) -> dict[str, Any]:
    """Every server's figures side by side (see the module)."""
    rows = labelled(recordings)
    sums = [summarize(srv) for _, _, srv in rows]
    return {
        "kind": "monitor-records",
        "files": [str(r.path) for r in recordings],
        "servers": [{"label": lab, "file": str(r.path), "url": srv.url} for lab, r, srv in rows],
        "figures": [{"key": k, "label": lab, "values": [s[k] for s in sums]} for k, lab in FIGURES],
        "notes": [r.note for r in recordings if r.note],
    }


def to_markdown(cmp: dict[str, Any]) -> str:
    """The comparison as one Markdown table (figures down, servers across)."""
    labels = [s["label"] for s in cmp["servers"]]
    lines = ["## Monitor recordings side by side", ""]
    lines.append("| figure | " + " | ".join(labels) + " |")
    lines.append("|" + "---|" * (len(labels) + 1))
    lines.append("| url | " + " | ".join(s["url"] for s in cmp["servers"]) + " |")
    for f in cmp["figures"]:
        cells = [format_figure(f["key"], v) for v in f["values"]]
        lines.append(f"| {f['label']} | " + " | ".join(cells) + " |")
    lines.append("")
    lines += [
        "Fractions are 0-1; times are seconds of monitored wall time (gaps where no "
        "monitor ran excluded); rates and hit rates are over each interval's counter "
        "increases; `-`: not known from the recording.",
        "",
    ]
    for n in cmp["notes"]:
        lines += [f"Note: {n}", ""]
    return "\n".join(lines)


def panel_rows(
    srv: Any,
) -> list[tuple[str, dict[str, tuple[list[float], list[float | None]]]]]:
    """The report's stacked panels for one server (only those with data)."""
    from kvlab.monitor.record import series

    s = series(srv)
    if not s:
        return []
    spec = (
        ("KV usage (0-1)", {"KV usage": "kv_cache_usage_perc"}),
        ("prefix hit rate (0-1)", {"per interval": "prefix_hit_rate"}),
        ("preemptions/s", {"preemptions/s": "preemptions_per_s"}),
        ("requests", {"running": "num_requests_running", "waiting": "num_requests_waiting"}),
        ("p99 latency s", {"TTFT p99": "ttft_p99_s", _itl_name(srv): "itl_p99_s"}),
    )
    rows = []
    for ylabel, names in spec:
        got = {name: s[key] for name, key in names.items() if any(v is not None for v in s[key][1])}
        if got:
            rows.append((ylabel, got))
    return rows


def _itl_name(srv: Any) -> str:
    """``ITL p99``, or ``TPOT p99`` when the quantiles came from the per-request
    time-per-output-token histogram (a server without a per-token one)."""
    metric = next((m for s in srv.samples if (m := s.texts.get("itl_metric"))), "") or ""
    return "TPOT p99" if "request_time_per_output_token" in metric else "ITL p99"


def alert_marks(srv: Any) -> list[tuple[float, str, str]]:
    """(seconds since the first sample, label, color) of each alert event."""
    if not srv.samples:
        return []
    t0 = srv.samples[0].t_unix
    return [
        (
            a.t_unix - t0,
            f"{a.rule} {a.event}",
            "tab:red" if a.event == "firing" else "tab:green",
        )
        for a in srv.alerts
    ]


__all__ = ["alert_marks", "compare_recordings", "labelled", "panel_rows", "to_markdown"]
