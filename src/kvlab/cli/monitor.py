"""``kvlab monitor``: a live KV dashboard over the ``/metrics`` of vLLM, SGLang and
llama.cpp servers, with alert rules (and the same rules for Prometheus)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import typer

HELP = """Watch the KV cache of one or more servers through their Prometheus /metrics.

Each URL (host:port, or a full /metrics URL) is scraped every --interval seconds;
vLLM (both metric-name generations), SGLang and llama.cpp are detected. The
dashboard shows KV usage (a fraction, drawn as a gauge and sparkline), the prefix
hit rate, preemptions per second, TTFT and inter-token p50/p99 over the last
interval (counter and histogram-bucket increases, not lifetime), running and
waiting requests, output tokens per second and the cache config. A server that
stops answering shows "unreachable since ..." and is picked up again when it
returns; a restart (counters going down) is detected, never a negative rate.

Alert rules (--rules FILE, default: docs/monitor.md; KV usage and TTFT thresholds
are the stress SLO's defaults) fire and resolve in the dashboard and as JSONL events
(--record); --exit-on-alert exits 3 when one fires. --rules-from-stress DIR derives
the thresholds from a finished kvlab stress run (usage bands and knee of its rate
sweeps, its SLO, the scenarios that met it); --save-rules FILE writes the rules in
use, each threshold with a comment saying where it came from. --export-rules FILE
writes them as Prometheus alerting rules on vLLM's names.

Examples:

  kvlab monitor localhost:8000 localhost:8001

  kvlab monitor localhost:8000 --once --json

  kvlab monitor localhost:8000 --rules alerts.yaml --record watch.jsonl --exit-on-alert

  kvlab monitor --export-rules kv-alerts.yml

  kvlab monitor --rules-from-stress runs/stress --save-rules alerts.yaml

  kvlab monitor --rules-from-stress runs/stress --export-rules kv-alerts.yml
"""


def monitor_cmd(
    urls: list[str] = typer.Argument(None, help="Servers: host:port or a /metrics URL."),
    interval: float = typer.Option(1.0, "--interval", "-i", help="Seconds between scrapes."),
    once: bool = typer.Option(
        False, "--once", help="Scrape twice, --interval apart, print one sample per server, exit."
    ),
    as_json: bool = typer.Option(
        False, "--json", help="JSON: one object with --once, else JSON lines of samples and events."
    ),
    rules: Path | None = typer.Option(None, "--rules", help="Alert rules (YAML)."),
    record: Path | None = typer.Option(
        None, "--record", help="Append every sample and alert event to this JSONL file."
    ),
    exit_on_alert: bool = typer.Option(
        False, "--exit-on-alert", help="Exit with code 3 as soon as an alert fires."
    ),
    duration: float | None = typer.Option(
        None, "--duration", help="Stop after this many seconds (default: until Ctrl-C)."
    ),
    timeout: float = typer.Option(2.0, "--timeout", help="Seconds to wait for one scrape."),
    export_rules: Path | None = typer.Option(
        None,
        "--export-rules",
        help="Write the rules as Prometheus alerting rules (YAML; '-' for stdout) and exit.",
    ),
    rules_from_stress: Path | None = typer.Option(
        None,
        "--rules-from-stress",
        help="Derive the rules from a kvlab stress run directory (its usage bands, knee, "
        "SLO and scenarios) instead of --rules.",
    ),
    save_rules: Path | None = typer.Option(
        None,
        "--save-rules",
        help="Write the rules in use as a rules file (YAML, each threshold with a comment "
        "saying where it came from; '-' for stdout); exits unless URLs are given.",
    ),
) -> None:
    from kvlab.errors import ConfigError
    from kvlab.monitor.alerts import (
        DEFAULT_RULES,
        DEFAULT_SOURCES,
        load_rules,
        prometheus_rules,
        rules_yaml,
    )

    if rules is not None and rules_from_stress is not None:
        raise ConfigError("give --rules or --rules-from-stress, not both")
    from kvlab.cli.options import output_file

    for path, option in ((record, "--record"), (export_rules, "--export-rules"),
                         (save_rules, "--save-rules")):  # fmt: skip
        if path is not None and str(path) != "-":
            output_file(path, option)  # before any server is read: one line
    sources: dict[str, str] = {}
    head = ""
    if rules_from_stress is not None:
        from kvlab.monitor.stress_rules import rules_from_stress as derive

        derived = derive(rules_from_stress)
        the_rules = tuple(d.rule for d in derived)
        sources = {d.rule.name: d.source for d in derived}
        head = f"derived by kvlab monitor --rules-from-stress from {rules_from_stress}"
    elif rules is not None:
        the_rules = load_rules(rules)
    else:
        the_rules = DEFAULT_RULES
        sources = dict(DEFAULT_SOURCES)
    if save_rules is not None:
        text = rules_yaml(the_rules, sources, head)
        if str(save_rules) == "-":
            typer.echo(text, nl=False)
        else:
            from kvlab.results import atomic_write_text

            atomic_write_text(save_rules, text)
            typer.echo(f"{len(the_rules)} alert rules -> {save_rules}", err=True)
        if not urls and export_rules is None:
            return
    if export_rules is not None:
        text = prometheus_rules(the_rules)
        if str(export_rules) == "-":
            typer.echo(text, nl=False)
        else:
            from kvlab.results import atomic_write_text

            atomic_write_text(export_rules, text)
            typer.echo(f"{len(the_rules)} alerting rules -> {export_rules}", err=True)
        return
    if not urls:
        raise ConfigError("give at least one server URL (e.g. localhost:8000)")
    if not interval > 0 or not timeout > 0:
        raise ConfigError("--interval and --timeout must be > 0")
    from kvlab.monitor.watch import Monitor

    mon = Monitor(urls, the_rules, timeout_s=timeout, record=record)
    try:
        if once:
            raise typer.Exit(_once(mon, interval, as_json))
        raise typer.Exit(_loop(mon, interval, as_json, exit_on_alert, duration))
    finally:
        mon.close()


def _once(mon: object, interval: float, as_json: bool) -> int:
    from kvlab.monitor.dashboard import server_lines
    from kvlab.monitor.watch import Monitor

    assert isinstance(mon, Monitor)
    mon.tick()
    time.sleep(interval)
    samples, events = mon.tick()
    bad = [s for s in samples if not s.up]
    if as_json:
        out = {
            "samples": [s.to_dict() for s in samples],
            "alerts": [e.to_dict() for e in events],
        }
        typer.echo(json.dumps(out, default=str))
    else:
        for v in mon.views:
            typer.echo(v.url)
            for label, value in server_lines(v):
                typer.echo(f"  {label:<14} {value}")
    for s in bad:
        typer.echo(f"error: {s.error}", err=True)
    return 1 if bad else 0


def _loop(
    mon: object, interval: float, as_json: bool, exit_on_alert: bool, duration: float | None
) -> int:
    from kvlab.monitor.dashboard import plain_line, render
    from kvlab.monitor.watch import Monitor

    assert isinstance(mon, Monitor)
    live = None
    if not as_json and sys.stdout.isatty():
        from rich.live import Live

        live = Live(render(mon.views, interval), auto_refresh=False, screen=False)
        live.start()
    t0 = time.monotonic()
    rc = 0
    try:
        n = 0
        while True:
            samples, events = mon.tick()
            if as_json:
                for s in samples:
                    typer.echo(json.dumps({"type": "sample", **s.to_dict()}, default=str))
                for e in events:
                    typer.echo(json.dumps(e.to_dict(), default=str))
            elif live is not None:
                live.update(render(mon.views, interval), refresh=True)
            else:
                for v in mon.views:
                    typer.echo(plain_line(v))
                for e in events:
                    typer.echo(f"alert {e.event}: {e.rule} on {e.url} (value {e.value})")
            if exit_on_alert and any(e.event == "firing" for e in events):
                rc = 3
                break
            n += 1
            elapsed = time.monotonic() - t0
            if duration is not None and elapsed >= duration:
                break
            time.sleep(max(0.0, t0 + n * interval - time.monotonic()))
    except KeyboardInterrupt:
        rc = 0
    finally:
        if live is not None:
            live.stop()
    if rc == 3 and not as_json:
        firing = [e for v in mon.views for e in v.last_events if e.event == "firing"]
        for e in firing:
            typer.echo(f"alert firing: {e.rule} on {e.url} (value {e.value})", err=True)
    return rc


def register(app: typer.Typer) -> None:
    app.command("monitor", help=HELP)(monitor_cmd)
